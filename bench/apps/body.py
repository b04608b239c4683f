"""Reads the whole request body (16 KiB in the benchmark) and answers with its length in bytes.

Answering with the byte count rather than the bytes keeps the response small, so the run measures
request-body handling (wsgi.input) the same way the reference figures in issue 7 were taken.
"""


def app(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    data = stream.read(length) if length > 0 else stream.read()
    body = str(len(data)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
