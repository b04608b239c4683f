#!/usr/bin/env bash
# The whole test suite, from a fresh clone: ./scripts/test.sh
# Installs what it needs (Debian packages when missing, Python packages into .venv), runs the
# Rust tests, builds and installs the wharf wheel, then runs every pytest suite under tests/.
# Extra arguments are passed to pytest (e.g. ./scripts/test.sh -k environ).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing system packages ($*) and no apt-get to install them" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    log "installing Debian packages: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# pyo3's Rust-side tests embed Python, so they link against the shared libpython.
python3 - <<'PY' || missing+=(python3-dev)
import os, sys, sysconfig
libdir = sysconfig.get_config_var("LIBDIR") or ""
ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
sys.exit(0 if ldlib.endswith(".so") and os.path.exists(os.path.join(libdir, ldlib)) else 1)
PY
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

log "Python environment (.venv)"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r tests/requirements.txt
export PATH="$root/.venv/bin:$PATH"
export PYO3_PYTHON="$root/.venv/bin/python"

log "Rust tests (cargo test --workspace)"
cargo test --workspace --quiet

log "Building and installing the wharf wheel"
rm -rf dist
maturin build --release --quiet -o dist
pip install -q --force-reinstall --no-deps dist/wharf-*.whl

log "Python test suites (pytest tests/)"
pytest tests -q -ra "$@"
