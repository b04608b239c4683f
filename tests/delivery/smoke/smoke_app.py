"""The hello example app plus a slow endpoint, so a test can hold a request open across SIGTERM."""

import time
from pathlib import Path

from app import app as hello

# Written when /slow has started, so the test knows the request is in flight before it signals.
STARTED = Path("/tmp/slow-request-started")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        STARTED.touch()
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow request finished\n"]
    return hello(environ, start_response)
