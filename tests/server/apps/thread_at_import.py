"""An app that starts a background thread while it is imported (a metrics poller, say)."""

import os
import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="metrics-poller", daemon=True).start()


def app(environ, start_response):
    body = f"{os.getpid()} {threading.active_count()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
