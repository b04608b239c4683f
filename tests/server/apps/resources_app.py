"""App for the per-worker resource metrics: burns CPU or keeps memory on request."""

import os
import time

HELD: list[bytearray] = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
    if path == "/burn":
        until = time.process_time() + float(query.get("s", "0.5"))
        while time.process_time() < until:
            pass
    elif path == "/hold":
        # Touch every page so the memory is resident, not just reserved.
        HELD.append(bytearray(b"x" * (int(query.get("mb", "64")) << 20)))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
