"""App for the zygote tests: builds a large heap at import (shared by forked workers), counts
os.register_at_fork hooks, and reports each worker's random state."""

import hashlib
import json
import os
import random
import uuid

# ~30 MiB of small Python objects: the kind of heap an imported framework leaves behind.
TABLE = {f"key-{i}": [i, str(i) * 3] for i in range(200_000)}

HOOKS = {"before": 0, "after_in_parent": 0, "after_in_child_pid": None}


def _before():
    HOOKS["before"] += 1


def _after_in_parent():
    HOOKS["after_in_parent"] += 1


def _after_in_child():
    HOOKS["after_in_child_pid"] = os.getpid()


os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)


def app(environ, start_response):
    state = hashlib.sha256(repr(random.getstate()).encode()).hexdigest()
    body = json.dumps(
        {
            "pid": os.getpid(),
            "hooks": HOOKS,
            "random_state": state,
            "uuid4": str(uuid.uuid4()),
            "table": len(TABLE),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
