"""An I/O-bound app for the autoscaling bench: 20 ms of blocking I/O (a sleep, GIL released) per
request, like a view waiting on its database. One thread serves at most 50 requests per second."""

import time

BODY = b"ok"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.020)
    start_response("200 OK", HEADERS)
    return [BODY]
