#!/usr/bin/env bash
# Quick start: builds wharf from this checkout into .venv and serves the bundled example app
# (examples/hello.py) on http://127.0.0.1:8000. Extra arguments go to wharf
# (e.g. ./scripts/run-example.sh --workers 2 --access-log).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=common.sh
. scripts/common.sh

ensure_system_packages
log "building and installing wharf into .venv (release build, takes a few minutes the first time)"
ensure_venv .
log "serving examples/hello.py on http://127.0.0.1:8000 (Ctrl-C to stop)"
exec .venv/bin/wharf --chdir examples --bind 127.0.0.1:8000 "$@" hello:app
