"""An I/O-bound app: 10 ms of blocking sleep (GIL released) per request.

With T threads the ceiling is T / 0.010 s requests per second (6,400 req/s with 64 threads).
"""

import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]
