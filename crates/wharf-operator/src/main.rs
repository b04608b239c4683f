use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use wharf_operator::cli::{Cli, Command};
use wharf_operator::error::Error;
use wharf_operator::{controller, crd_yaml, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Crd) => print_crd(),
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wharf-operator failed");
            eprintln!("wharf-operator: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: wharf_operator::cli::RunArgs) -> Result<(), Error> {
    let _telemetry = telemetry::init(args.log_format, &args.log_level)?;
    controller::run(args).await
}

fn print_crd() -> Result<(), Error> {
    std::io::stdout()
        .write_all(crd_yaml()?.as_bytes())
        .map_err(Error::Stdout)
}
