"""An app whose import takes `SLOW_IMPORT_SECONDS` (as a large Django project's can)."""

import os
import time

time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "0")))


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    return [b"imported"]
