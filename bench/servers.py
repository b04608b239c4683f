"""The servers under comparison: how to install each one and the command that starts it.

Every command serves one app on 127.0.0.1:{port} with one worker process; the harness starts it
with the apps directory as working directory, pinned to the server CPU, in its own session.
Placeholders: {port} {app} (module:attribute) {apps} (apps dir) {bin} (bench venv bin dir)
{wharf} (wharf executable) {threads} {runners} (runners dir); in `env` values {otlp_port} (the
port of the OTLP receiver the harness runs on the wrk CPU when a server's env names it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Exact peer versions: the ones the issue-7 targets were measured against.
FLASK_REQUIREMENTS = ("flask==3.1.3", "werkzeug==3.1.9")


@dataclass(frozen=True)
class Server:
    name: str
    requirements: tuple[str, ...]
    command: str
    # app name -> command used instead of `command` for that app
    per_app: dict[str, str] = field(default_factory=dict)
    debian_packages: tuple[str, ...] = ()
    # app name -> what a reader of that app's table must know about this server's figures
    notes: dict[str, str] = field(default_factory=dict)
    # extra environment variables (placeholders as above)
    env: dict[str, str] = field(default_factory=dict)
    # the apps this entry runs (None: all)
    apps: tuple[str, ...] | None = None

    def command_for(self, app: str) -> str:
        return self.per_app.get(app, self.command)


_WHARF = "{wharf} --bind 127.0.0.1:{port} --threads {threads} --log-level warn --chdir {apps} {app}"
_UWSGI_COMMON = ("--processes 1 --threads {threads} --enable-threads --listen 1024 --disable-logging "
                 "--die-on-term --module {app} --chdir {apps}")

SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server(
            "wharf",
            (),
            _WHARF,
        ),
        Server(
            # wharf again with tracing on, every request sampled, for the "tracing costs ≤ 5%" target
            "wharf-otel",
            (),
            _WHARF,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{otlp_port}", "OTEL_TRACES_SAMPLER": "always_on",
                 "OTEL_SERVICE_NAME": "wharf-bench"},
            apps=("hello",),
            notes={"hello": "wharf-otel is wharf with every request traced, exporting OTLP/HTTP to a live local "
                            "receiver (runners/otlp_sink.py, pinned to the wrk CPU)"},
        ),
        Server(
            "granian",
            ("granian==2.8.7",),
            "{bin}/granian --interface wsgi --host 127.0.0.1 --port {port} --workers 1 --runtime-threads 1 "
            "--blocking-threads {threads} --http 1 --no-ws --log-level warning {app}",
        ),
        Server(
            "gunicorn",
            ("gunicorn==27.0.1",),
            "{bin}/gunicorn --workers 1 --worker-class gthread --threads {threads} --keep-alive 120 "
            "--backlog 2048 --bind 127.0.0.1:{port} --log-level warning {app}",
        ),
        Server(
            "uwsgi",
            ("uwsgi==2.0.31",),
            "{bin}/uwsgi --http11-socket 127.0.0.1:{port} " + _UWSGI_COMMON,
            # --http11-socket neither chunks nor closes a response that has no Content-Length, so the
            # client never sees its end; --http-socket closes the connection after each response.
            per_app={"stream": "{bin}/uwsgi --http-socket 127.0.0.1:{port} " + _UWSGI_COMMON},
            notes={"stream": "uwsgi runs this app with --http-socket, which closes the connection after each "
                             "response: wrk counts every close as a read error and reconnects"},
        ),
        Server(
            "bjoern",
            ("bjoern==3.2.2",),
            "{bin}/python {runners}/bjoern_run.py {port} {app}",
            debian_packages=("libev-dev",),
            notes={"sleep": "bjoern is single-threaded: one 10 ms request at a time, so ~100 req/s at most"},
        ),
    )
}

# wharf's own variants are not peers: they run the wharf under test
PEERS = tuple(name for name in SERVERS if not name.startswith("wharf"))
