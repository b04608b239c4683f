"""100 chunks of 1 KiB from a generator and no Content-Length: the server must chunk (or close)."""

CHUNK = b"x" * 1024
CHUNKS = 100


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (CHUNK for _ in range(CHUNKS))
