//! Options a gunicorn user types from habit that wharf does not have: each names why, and what
//! to do instead. Without this, clap suggests the nearest wharf flag by spelling, which is
//! wrong for exactly these (`--preload` -> `--reload`, `--pid` -> `--bind`).
//! docs/migrating-from-gunicorn.md has the full table, including the options wharf shares.

const TLS: &str = "wharf does not terminate TLS: put a reverse proxy or Ingress in front of it \
                   (wharf speaks plain HTTP/1.1) and list the proxy in --forwarded-allow-ips so \
                   the app sees wsgi.url_scheme = https";
const HTTP2: &str = "wharf speaks HTTP/1.1; HTTP/2 is terminated by the proxy or Ingress in front of it";
const WORKER_MODEL: &str = "wharf has one worker model, nothing to choose: each worker process has an \
                            async I/O thread and --threads Python threads (WSGI only, no ASGI or \
                            WebSockets)";
const USER: &str = "wharf does not switch users or umask: start it as the user it should run as \
                    (systemd User=/Group=/UMask=, a container's USER)";
const SERVER_LOG: &str = "wharf logs to stderr (--log-format text|json, --log-level) and the app's \
                          stdout/stderr are inherited; redirect them or let systemd or the container \
                          runtime collect them";
const LOG_PLUGINS: &str = "logging is not pluggable: lines go to stderr (--log-format text|json); \
                           forward them to syslog with the service manager or a log collector";
const STATSD: &str = "wharf has no StatsD client: it serves Prometheus metrics at /metrics on \
                      --admin-bind ADDR (queue depth included: wharf_requests_queued)";
const PASTE: &str = "wharf does not read PasteDeploy files: name the WSGI callable as \
                     module:attribute (add --factory for a function that builds it)";
const PROXY_PROTOCOL: &str = "wharf does not speak the PROXY protocol: have the proxy send \
                              X-Forwarded-For or Forwarded and list it in --forwarded-allow-ips";
const STRICT_HTTP: &str = "HTTP parsing is strict and not configurable (obsolete or unconventional \
                           forms get 400; header names with `_` are dropped, like gunicorn's \
                           --header-map drop)";
const DIRTY: &str = "wharf has no dirty arbiters: run long jobs in a task queue, or raise --timeout \
                     and --threads";
const CONTROL: &str = "wharf is controlled with signals to the supervisor: SIGHUP restarts the \
                       workers, SIGTTIN/SIGTTOU add or remove one, SIGTERM drains";
const RELOAD: &str = "--reload watches every .py file under the working directory; there is \
                      nothing more to configure";

/// Every option gunicorn 27 has that wharf lacks, by each of its spellings.
const HABITS: &[(&[&str], &str)] = &[
    (
        &[
            "--certfile",
            "--keyfile",
            "--ca-certs",
            "--ssl-version",
            "--cert-reqs",
            "--ciphers",
            "--suppress-ragged-eofs",
            "--do-handshake-on-connect",
        ],
        TLS,
    ),
    (
        &[
            "--http-protocols",
            "--http2-cleartext",
            "--http2-max-concurrent-streams",
            "--http2-initial-window-size",
            "--http2-max-frame-size",
            "--http2-max-header-list-size",
        ],
        HTTP2,
    ),
    (
        &[
            "-k",
            "--worker-class",
            "--asgi-loop",
            "--asgi-lifespan",
            "--asgi-disconnect-grace-period",
            "--websocket-max-message-size",
            "--http-parser",
        ],
        WORKER_MODEL,
    ),
    (
        &["--worker-connections"],
        "wharf does not cap connections per worker: --threads and \
                                 --queue-size bound the requests in progress (more queued get 503)",
    ),
    (
        &["-D", "--daemon"],
        "wharf stays in the foreground: run it under systemd, supervisord or a \
                           container runtime",
    ),
    (
        &["-p", "--pid"],
        "wharf writes no pid file: the process you start is the supervisor, so \
                        systemd or the container runtime already has its pid; send signals there",
    ),
    (
        &["--preload"],
        "wharf already imports the app once and forks the workers from it, \
                      whenever that is safe (--no-preload turns it off)",
    ),
    (&["-u", "--user", "-g", "--group", "-m", "--umask", "--initgroups"], USER),
    (
        &["-e", "--env"],
        "set variables in the environment that starts wharf (shell, systemd \
                        Environment=, container env); workers inherit it",
    ),
    (
        &["--worker-tmp-dir"],
        "workers report liveness to the supervisor over a pipe; wharf needs \
                             no temporary files",
    ),
    (
        &["--no-sendfile"],
        "wsgi.file_wrapper files are read in Rust without the GIL and written by \
                          the I/O thread; there is nothing to switch off",
    ),
    (
        &["--reuse-port"],
        "the supervisor binds each address once and every worker shares that \
                         socket; SO_REUSEPORT is not needed",
    ),
    (
        &["--spew"],
        "wharf does not trace Python lines; use a debugger, or --log-level debug for \
                   the server's own events",
    ),
    (&["--reload-engine", "--reload-extra-file"], RELOAD),
    (
        &["-t"],
        "wharf has no -t: use --timeout SECONDS (an app call that has not started its \
               response in time gets 504 and the worker is replaced; 0 = off)",
    ),
    (&["--keep-alive"], "use --keep-alive-timeout SECONDS"),
    (&["--limit-request-fields"], "use --limit-request-headers N"),
    (
        &["--limit-request-field_size", "--limit-request-field-size"],
        "use --limit-request-headers-size BYTES (it bounds the whole request head)",
    ),
    (
        &["--access-logfile"],
        "use --access-log: access lines go to stdout (redirect it to a file \
                             if you need one)",
    ),
    (
        &["--access-logformat"],
        "use --access-log-format combined|json; other formats are not \
                               supported",
    ),
    (&["--error-logfile", "--log-file", "--capture-output", "-R", "--enable-stdio-inheritance"], SERVER_LOG),
    (
        &[
            "--logger-class",
            "--log-config",
            "--log-config-json",
            "--log-syslog",
            "--log-syslog-to",
            "--log-syslog-prefix",
            "--log-syslog-facility",
            "--disable-redirect-access-to-syslog",
        ],
        LOG_PLUGINS,
    ),
    (&["--statsd-host", "--statsd-prefix", "--dogstatsd-tags", "--enable-backlog-metric"], STATSD),
    (&["-n", "--name"], "wharf does not set process titles"),
    (
        &["--pythonpath"],
        "the working directory (--chdir) is importable; set PYTHONPATH for more \
                         directories",
    ),
    (&["--paste", "--paster", "--paste-global"], PASTE),
    (&["--proxy-protocol", "--proxy-allow-from"], PROXY_PROTOCOL),
    (&["--protocol", "--uwsgi-allow-from"], "wharf speaks HTTP only, not the uwsgi protocol"),
    (
        &[
            "--permit-obsolete-folding",
            "--strip-header-spaces",
            "--permit-unconventional-http-method",
            "--permit-unconventional-http-version",
            "--casefold-http-method",
            "--header-map",
        ],
        STRICT_HTTP,
    ),
    (
        &["--forwarder-headers"],
        "SCRIPT_NAME comes from --root-path and is never taken from \
                                request headers",
    ),
    (&["--dirty-app", "--dirty-workers", "--dirty-timeout", "--dirty-threads", "--dirty-graceful-timeout"], DIRTY),
    (&["--control-socket", "--control-socket-mode", "--no-control-socket"], CONTROL),
];

/// Why wharf has no `flag` (an option as typed: `--pid`, `-k`, `--pid=x`), if it is a gunicorn
/// habit.
pub(crate) fn habit(flag: &str) -> Option<&'static str> {
    let name = flag.split_once('=').map_or(flag, |(name, _)| name);
    HABITS.iter().find(|(spellings, _)| spellings.contains(&name)).map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_values_are_recognised() {
        assert_eq!(habit("--certfile=/etc/tls.pem"), Some(TLS));
        assert_eq!(habit("-k"), Some(WORKER_MODEL));
        assert!(habit("--preload").is_some_and(|why| why.contains("--no-preload")));
        assert_eq!(habit("--bind"), None);
        assert_eq!(habit("--reload"), None);
    }
}
