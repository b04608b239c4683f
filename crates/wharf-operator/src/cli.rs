//! Command line of `wharf-operator`. Every flag is also an environment variable.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wharf-operator",
    version,
    about = "Kubernetes operator for wharf WsgiApps",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, accepted without the subcommand since `run` is the default.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the WsgiApp CustomResourceDefinition as YAML.
    Crd,
    /// Run the concurrency autoscaler's scrape and decision on JSON ticks from stdin (bench/autoscale.py).
    AutoscaleSim(crate::autoscale::sim::SimArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Watch WsgiApps in this namespace only (default: all namespaces).
    #[arg(long, env = "WHARF_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the operator's own /metrics, /livez and /readyz.
    #[arg(
        long,
        env = "WHARF_OPERATOR_METRICS_BIND",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_bind: SocketAddr,
    /// Image carrying the wharf runtime under /wharf, for WsgiApps with `runtime: Injected` that name none.
    #[arg(long, env = "WHARF_INJECTOR_IMAGE")]
    pub injector_image: Option<String>,
    /// Coordinate replicas through a coordination.k8s.io Lease so only one reconciles.
    #[arg(long, env = "WHARF_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "WHARF_OPERATOR_LEASE_NAME",
        default_value = "wharf-operator"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: the operator pod's namespace from POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity of this replica in the Lease (default: the pod name from POD_NAME, else random).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// WsgiApps reconciled in parallel.
    #[arg(long, env = "WHARF_OPERATOR_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Log output format.
    #[arg(long, env = "WHARF_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `wharf_operator=debug,kube=info`.
    #[arg(long, env = "WHARF_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_the_default_and_flags_parse() {
        let cli = Cli::try_parse_from([
            "wharf-operator",
            "--namespace",
            "apps",
            "--leader-election",
            "false",
        ])
        .expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.namespace.as_deref(), Some("apps"));
        assert!(!cli.run.leader_election);
        let cli = Cli::try_parse_from([
            "wharf-operator",
            "run",
            "--injector-image",
            "reg/wharf-injector:1",
        ])
        .expect("parses");
        let Some(Command::Run(args)) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.injector_image.as_deref(), Some("reg/wharf-injector:1"));
        assert!(matches!(
            Cli::try_parse_from(["wharf-operator", "crd"])
                .expect("parses")
                .command,
            Some(Command::Crd)
        ));
    }
}
