"""The benchmark apps: which WSGI callable each one is, how wrk drives it, and what a correct
response looks like (checked once per server before load, since wrk only counts status codes)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
POST_BODY_SIZE = 16384


def _exact(expected: bytes) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        return None if body == expected else f"body {body[:80]!r} != {expected[:80]!r}"
    return check


def _json_message(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError as exc:
        return f"not JSON ({exc}): {body[:80]!r}"
    return None if document.get("message") == "Hello, World!" else f"unexpected JSON {document!r}"


@dataclass(frozen=True)
class Workload:
    name: str
    spec: str  # module:attribute inside apps/
    check_body: Callable[[bytes], str | None]
    post_body: bytes | None = None
    wrk_script: Path | None = None

    def check(self, port: int, timeout: float = 10.0) -> str | None:
        """One request against a running server; None if the answer is right, else what was wrong."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            if self.post_body is None:
                conn.request("GET", "/")
            else:
                conn.request("POST", "/", body=self.post_body,
                             headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"request failed: {exc!r}"
        finally:
            conn.close()
        if response.status != 200:
            return f"status {response.status} {response.reason}: {body[:200]!r}"
        return self.check_body(body)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("hello", "hello:app", _exact(b"Hello, World!")),
        Workload("json", "json_app:app", _json_message),
        Workload("flask", "flask_app:app", _json_message),
        Workload("body", "body:app", _exact(str(POST_BODY_SIZE).encode()),
                 post_body=b"a" * POST_BODY_SIZE, wrk_script=HERE / "post16k.lua"),
        Workload("stream", "stream:app", _exact(b"x" * 1024 * 100)),
        Workload("sleep", "sleep_app:app", _exact(b"Hello, World!")),
    )
}
