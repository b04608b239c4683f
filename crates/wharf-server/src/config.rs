//! Command line and environment configuration (`wharf --help`).
//!
//! Every flag can also be given as a `WHARF_<NAME>` environment variable so that container
//! images and the operator can configure the server without rewriting the command line, and
//! as a key of a TOML file (`config_file`): command line > environment > file > default.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::app_name;
use crate::http::{BindSpec, TrustedProxies};
use crate::wsgi::ErrorsLevel;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wharf",
    version,
    about = "A fast, PEP 3333-exact WSGI server",
    after_help = "Every option can also be set through the environment as WHARF_<OPTION> \
                  (e.g. WHARF_BIND=0.0.0.0:8000, WHARF_THREADS=16), or as a key (the long option \
                  name) in a TOML file given with --config or in [tool.wharf] of ./pyproject.toml. \
                  Precedence: command line, environment, file, default."
)]
pub(crate) struct Config {
    /// The WSGI application: `module:attribute` (`module` alone means `module:application`).
    /// Required, here, as WHARF_APP or as `app` in the config file.
    #[arg(env = "WHARF_APP", value_name = "APP", default_value = "", hide_default_value = true)]
    pub(crate) app: String,

    /// TOML file with settings (keys: long option names). Without it, `[tool.wharf]` in
    /// pyproject.toml of the --chdir directory (else the current one) is used, if present.
    #[arg(long, short = 'c', env = "WHARF_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Read no config file: neither --config nor pyproject.toml.
    #[arg(long)]
    pub(crate) no_config: bool,

    /// Print the effective settings as TOML, each with where it came from, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    /// Validate the settings and import the app, then exit: 0 fine, 2 bad configuration,
    /// 3 the app cannot be imported.
    #[arg(long)]
    pub(crate) check_config: bool,

    /// Call the attribute with no arguments to obtain the application (an app factory).
    #[arg(long, env = "WHARF_FACTORY")]
    pub(crate) factory: bool,

    /// Address to listen on: HOST:PORT, [IPv6]:PORT, :PORT or PORT (all IPv4 interfaces)
    /// or unix:/path. Repeatable.
    #[arg(
        long = "bind",
        short = 'b',
        env = "WHARF_BIND",
        value_delimiter = ',',
        default_value = "127.0.0.1:8000",
        value_name = "ADDR",
        value_parser = parse_bind
    )]
    pub(crate) binds: Vec<BindSpec>,

    /// Worker processes, each with its own Python interpreter and thread pool.
    #[arg(long, short = 'w', env = "WHARF_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub(crate) workers: u32,

    /// Python threads serving requests in each worker.
    #[arg(long, env = "WHARF_THREADS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) threads: u32,

    /// Requests allowed to wait for a free Python thread; beyond that the server answers 503.
    #[arg(long, env = "WHARF_QUEUE_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) queue_size: u32,

    /// Listen backlog of the listening sockets.
    #[arg(long, env = "WHARF_BACKLOG", default_value_t = 1024)]
    pub(crate) backlog: u32,

    /// Change to this directory before importing the application.
    #[arg(long, env = "WHARF_CHDIR", value_name = "DIR")]
    pub(crate) chdir: Option<PathBuf>,

    /// Mount point of the application: SCRIPT_NAME, stripped from the front of PATH_INFO.
    #[arg(long, env = "WHARF_ROOT_PATH", default_value = "", value_parser = parse_root_path)]
    pub(crate) root_path: String,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "WHARF_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub(crate) log_level: String,

    /// Level of the records made from what the app writes to `wsgi.errors` (one per line, with
    /// the request's method and path): error, warn, info or debug.
    #[arg(long, env = "WHARF_ERRORS_LOG_LEVEL", value_enum, default_value_t = ErrorsLevel::Warn)]
    pub(crate) errors_log_level: ErrorsLevel,

    /// Format of the server's own log lines (written to stderr).
    #[arg(long, env = "WHARF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Write one access-log line per finished response to stdout.
    #[arg(long, env = "WHARF_ACCESS_LOG")]
    pub(crate) access_log: bool,

    /// Format of access-log lines.
    #[arg(long, env = "WHARF_ACCESS_LOG_FORMAT", value_enum, default_value_t = AccessLogFormat::Combined)]
    pub(crate) access_log_format: AccessLogFormat,

    /// Record the query string (`url.query`) on request trace spans (it may hold secrets).
    #[arg(long, env = "WHARF_TRACE_QUERY")]
    pub(crate) trace_query: bool,

    /// Quote the query string in log lines about a request (they show the path only by
    /// default: queries carry tokens). The access log always has the full target.
    #[arg(long, env = "WHARF_LOG_QUERY")]
    pub(crate) log_query: bool,

    /// Longest accepted request line (method, target and version), in bytes; longer gets 414.
    #[arg(long, env = "WHARF_LIMIT_REQUEST_LINE", default_value_t = 8190, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub(crate) limit_request_line: u32,

    /// Most header fields accepted in one request; more gets 431.
    #[arg(long, env = "WHARF_LIMIT_REQUEST_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) limit_request_headers: u32,

    /// Largest total size of the request head (request line and all header fields), in bytes; larger gets 431.
    #[arg(long, env = "WHARF_LIMIT_REQUEST_HEADERS_SIZE", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub(crate) limit_request_headers_size: u32,

    /// Largest request body accepted, in bytes (0: no limit); larger gets 413.
    #[arg(long, env = "WHARF_LIMIT_REQUEST_BODY", default_value_t = 0)]
    pub(crate) limit_request_body: u64,

    /// Seconds a client may take to send a complete request head (measured from when the
    /// server starts waiting for it); then the connection is closed.
    #[arg(long, env = "WHARF_HEADER_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub(crate) header_timeout: Duration,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, env = "WHARF_KEEP_ALIVE_TIMEOUT", default_value = "5", value_parser = parse_seconds)]
    pub(crate) keep_alive_timeout: Duration,

    /// Seconds an application call may take before the response head is sent; then the
    /// client gets 504 and the worker (whose Python thread cannot be interrupted) is replaced.
    /// 0 disables the limit.
    #[arg(long, env = "WHARF_TIMEOUT", default_value = "0", value_parser = parse_seconds_or_zero)]
    pub(crate) timeout: Duration,

    /// Seconds a stopping worker (or the whole server on SIGTERM) gets to finish in-flight
    /// requests before it is killed.
    #[arg(long, env = "WHARF_GRACEFUL_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub(crate) graceful_timeout: Duration,

    /// Seconds a starting worker may take to import the app and become ready before it is
    /// killed and started again. Once ready, a worker silent for 30 s is replaced instead.
    #[arg(long, env = "WHARF_STARTUP_TIMEOUT", default_value = "300", value_parser = parse_seconds)]
    pub(crate) startup_timeout: Duration,

    /// On SIGTERM, fail /readyz at once but keep serving for this many seconds before draining,
    /// so load balancers (Kubernetes endpoints) stop sending new connections first. A second
    /// SIGTERM, or SIGINT, drains at once. 0: drain at once.
    #[arg(long, env = "WHARF_SHUTDOWN_DELAY", default_value = "0", value_parser = parse_seconds_or_zero)]
    pub(crate) shutdown_delay: Duration,

    /// Replace a worker after it served this many requests (0: never), without dropping any.
    #[arg(long, env = "WHARF_MAX_REQUESTS", default_value_t = 0)]
    pub(crate) max_requests: u64,

    /// Add a random 0..=N to each worker's --max-requests so workers do not recycle together.
    #[arg(long, env = "WHARF_MAX_REQUESTS_JITTER", default_value_t = 0)]
    pub(crate) max_requests_jitter: u64,

    /// Admin listener (HOST:PORT) answering /livez, /readyz and /metrics from the supervisor,
    /// apart from application traffic. Off unless set.
    #[arg(long, env = "WHARF_ADMIN_BIND", value_name = "ADDR", value_parser = parse_bind)]
    pub(crate) admin_bind: Option<BindSpec>,

    /// Peers (comma-separated IPs or CIDRs, `unix` for unix-socket peers, or `*`) whose
    /// X-Forwarded-For/-Proto/-Host and Forwarded headers are trusted to set REMOTE_ADDR,
    /// wsgi.url_scheme and the host.
    #[arg(long, env = "WHARF_FORWARDED_ALLOW_IPS", default_value = "127.0.0.1,::1,unix", value_parser = parse_trusted)]
    pub(crate) forwarded_allow_ips: TrustedProxies,

    /// Development: restart workers when a .py file under the working directory changes.
    #[arg(long, env = "WHARF_RELOAD")]
    pub(crate) reload: bool,

    /// Keep a streamed response on its Python thread while its client is not reading (by
    /// default the thread serves others meanwhile, and the response goes on later on any
    /// thread): for generators that need their thread's `threading.local` state.
    #[arg(long, env = "WHARF_PIN_STREAMS")]
    pub(crate) pin_streams: bool,

    /// Seconds a client may stall while the app reads the request body or while a response
    /// waits to be written; then the connection is dropped.
    #[arg(long, env = "WHARF_IO_TIMEOUT", default_value = "60", value_parser = parse_seconds)]
    pub(crate) io_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AccessLogFormat {
    Combined,
    Json,
}

impl Config {
    /// `--timeout`, if enabled.
    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }

    /// `module:attribute` split in two (see [`app_name`]); `module` alone means
    /// `module:application`.
    pub(crate) fn app_target(&self) -> Result<(&str, &str), String> {
        let target = if self.app.contains(':') {
            app_name::split(&self.app)
        } else {
            app_name::split(&format!("{}:application", self.app)).map(|_| (self.app.as_str(), "application"))
        };
        target.ok_or_else(|| {
            format!(
                "invalid APP {:?}: expected `module:attribute` with dotted Python names, e.g. `myproject.wsgi:application`",
                self.app
            )
        })
    }
}

/// gunicorn's `:8000` (and a bare `8000`) mean every IPv4 interface; `tcp://` is accepted
/// and dropped, as gunicorn does.
fn parse_bind(value: &str) -> Result<BindSpec, String> {
    let value = value.trim();
    let value = value.strip_prefix("tcp://").unwrap_or(value);
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        return format!("0.0.0.0:{port_only}").parse();
    }
    if let Some(fd) = value.strip_prefix("fd://") {
        return Err(format!(
            "fd://{fd}: inherited sockets come from systemd socket activation (LISTEN_FDS), not from a bind address"
        ));
    }
    value.parse()
}

/// gunicorn's (and Python logging's) `warning` and `critical` mean wharf's `warn` and `error`.
fn parse_log_level(value: &str) -> Result<String, String> {
    Ok(match value.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" => "error".to_owned(),
        _ => value.to_owned(),
    })
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{value:?} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_seconds_or_zero(value: &str) -> Result<Duration, String> {
    if value.trim().parse::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(value)
}

fn parse_trusted(value: &str) -> Result<TrustedProxies, String> {
    value.parse()
}

fn parse_root_path(value: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if !trimmed.starts_with('/') {
        return Err(format!("{value:?} must start with '/'"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("wharf").chain(args.iter().copied()))
    }

    #[test]
    fn app_target_defaults_to_application() {
        let cfg = parse(&["pkg.mod"]).expect("parses");
        assert_eq!(cfg.app_target(), Ok(("pkg.mod", "application")));
        let cfg = parse(&["pkg.mod:create.app"]).expect("parses");
        assert_eq!(cfg.app_target(), Ok(("pkg.mod", "create.app")));
    }

    #[test]
    fn app_target_rejects_bad_shapes() {
        for bad in ["", ":app", "mod:", "a..b:app", "mod:app-x", "mod:a:b"] {
            let cfg = parse(&[bad]).expect("clap accepts any string");
            assert!(cfg.app_target().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn binds_repeat_and_split() {
        let cfg = parse(&["--bind", "127.0.0.1:1", "-b", "unix:/tmp/x.sock,[::1]:2", "app"]).expect("parses");
        assert_eq!(cfg.binds.len(), 3);
    }

    #[test]
    fn port_only_binds_every_ipv4_interface() {
        for spec in [":8000", "8000", "tcp://:8000", "0.0.0.0:8000"] {
            let cfg = parse(&["-b", spec, "app"]).expect("parses");
            assert_eq!(cfg.binds[0].to_string(), "http://0.0.0.0:8000", "{spec}");
        }
        assert!(parse(&["-b", ":99999", "app"]).is_err());
        assert!(parse(&["-b", "fd://3", "app"]).is_err());
    }

    #[test]
    fn python_log_level_names_are_accepted() {
        assert_eq!(parse(&["--log-level", "WARNING", "app"]).expect("parses").log_level, "warn");
        assert_eq!(parse(&["--log-level", "critical", "app"]).expect("parses").log_level, "error");
        assert_eq!(parse(&["--log-level", "debug", "app"]).expect("parses").log_level, "debug");
    }

    #[test]
    fn seconds_and_root_path_are_validated() {
        assert!(parse(&["--header-timeout", "0", "app"]).is_err());
        assert!(parse(&["--header-timeout", "abc", "app"]).is_err());
        assert_eq!(
            parse(&["--keep-alive-timeout", "0.5", "app"]).expect("parses").keep_alive_timeout,
            Duration::from_millis(500)
        );
        assert!(parse(&["--root-path", "api", "app"]).is_err());
        assert_eq!(parse(&["--root-path", "/api/", "app"]).expect("parses").root_path, "/api");
        assert!(parse(&["--threads", "0", "app"]).is_err());
        assert_eq!(parse(&["--timeout", "0", "app"]).expect("parses").request_timeout(), None);
        assert_eq!(parse(&["--timeout", "2", "app"]).expect("parses").request_timeout(), Some(Duration::from_secs(2)));
        assert!(parse(&["--forwarded-allow-ips", "10.0.0.0/33", "app"]).is_err());
    }
}
