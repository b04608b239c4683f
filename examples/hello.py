"""The smallest useful WSGI app: `wharf examples.hello:app`."""


def app(environ, start_response):
    body = b"Hello from wharf!\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
