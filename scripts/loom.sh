#!/usr/bin/env bash
# Model-checks the hand-written cross-thread primitives of the server (job queue, outbox,
# streamed-body pipe in crates/wharf-server/src/bridge) with loom: their `loom_tests` run under
# every interleaving of their threads (up to three preemptions). Run by scripts/test.sh.
#
# `--cfg loom` is given to wharf-server alone (cargo rustc): tokio and hyper-util compile their
# networking out under that cfg, so RUSTFLAGS would break them; this way the dependencies of the
# ordinary test build are reused and only wharf-server is compiled again.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(cargo rustc -p wharf-server --lib --profile test --message-format=json --quiet -- --cfg loom |
    python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "wharf_server":
        print(msg["executable"])
')
if [ -z "$bin" ]; then
    echo "loom.sh: no test binary was built" >&2
    exit 1
fi
"$bin" --quiet loom_tests "$@"
