"""Start bjoern (a single-threaded libev server with no CLI) on 127.0.0.1:PORT serving MODULE:ATTR.

Usage: python bjoern_run.py PORT MODULE:ATTR   (run with the apps directory as the working directory)
"""

import importlib
import sys

import bjoern


def main() -> None:
    port, spec = int(sys.argv[1]), sys.argv[2]
    module, _, attribute = spec.partition(":")
    sys.path.insert(0, ".")
    app = getattr(importlib.import_module(module), attribute or "application")
    bjoern.run(app, "127.0.0.1", port)


if __name__ == "__main__":
    main()
