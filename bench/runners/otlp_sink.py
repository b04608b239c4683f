"""A live OTLP/HTTP trace receiver for the tracing benchmark: accepts every export and discards it.

Usage: python otlp_sink.py PORT

It answers `POST /v1/traces` with 200 and an empty ExportTraceServiceResponse (an empty protobuf
message is zero bytes), reading each body in full as a collector would, so the exporter does all of
its real work (encoding, HTTP) and nothing is dropped for want of a receiver. On SIGTERM it prints
how many exports and bytes it took.
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = {"exports": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
        received["exports"] += 1
        received["bytes"] += length - remaining
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(signum, frame):
        print(f"otlp sink: {received['exports']} exports, {received['bytes']} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"otlp sink listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
