"""App for lifecycle tests: reports its pid and version, can sleep, block or be slow."""

import os
import time

VERSION = "v1"


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    environ["wsgi.input"].read()
    if path == "/sleep":
        time.sleep(float(query.split("=", 1)[1]) if "=" in query else 2.0)
    elif path == "/block":
        # Occupies a thread until the gate file exists (bounded).
        gate = query.split("=", 1)[1]
        with open(gate + ".entered", "a") as entered:
            entered.write("x")
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    elif path == "/remote":
        body = "|".join(
            [environ.get("REMOTE_ADDR", ""), environ["wsgi.url_scheme"], environ.get("HTTP_HOST", ""), environ["SERVER_NAME"]]
        ).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = f"{VERSION} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
