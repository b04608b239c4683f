"""A small JSON document built per request (dict construction + json.dumps + one environ read)."""

import json


def app(environ, start_response):
    document = {"message": "Hello, World!", "id": 42, "ok": True, "items": [1, 2, 3],
                "path": environ.get("PATH_INFO", "")}
    body = json.dumps(document).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
