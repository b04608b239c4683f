"""In-cluster load generator for the rolling-update check (runs inside the hello image).

Sends sequential GETs to URL for DURATION seconds and prints one JSON summary line: how many
requests succeeded, failed (connection errors or non-200), and which app versions answered.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

url = os.environ["URL"]
duration = float(os.environ.get("DURATION", "60"))
counts = {"ok": 0, "failed": 0, "versions": {}, "errors": []}
print("load: started", flush=True)
deadline = time.monotonic() + duration
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        counts["ok"] += 1
        version = body.rsplit("version=", 1)[-1].strip()
        counts["versions"][version] = counts["versions"].get(version, 0) + 1
    except (urllib.error.URLError, OSError) as err:
        counts["failed"] += 1
        if len(counts["errors"]) < 10:
            counts["errors"].append(repr(err))
    time.sleep(0.02)
print("load: " + json.dumps(counts), flush=True)
sys.exit(0)
