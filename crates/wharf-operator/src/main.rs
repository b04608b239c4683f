use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use wharf_operator::cli::{Cli, Command, RunArgs};
use wharf_operator::error::Error;
use wharf_operator::{autoscale, controller, crd_yaml, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match print_crd() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("wharf-operator: {error}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => run(args).await,
        Some(Command::AutoscaleSim(args)) => match autoscale::sim::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("wharf-operator autoscale-sim: {error}");
                ExitCode::FAILURE
            }
        },
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let _telemetry = match telemetry::init(args.log_format, &args.log_level) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("wharf-operator: {error}");
            return ExitCode::FAILURE;
        }
    };
    match controller::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wharf-operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn print_crd() -> Result<(), Error> {
    std::io::stdout()
        .write_all(crd_yaml()?.as_bytes())
        .map_err(Error::Stdout)
}
