#!/usr/bin/env bash
# Shared by scripts/run-example.sh and scripts/test.sh (sourced, not run): installs what a
# fresh Debian machine with Rust and Python 3 lacks, and the project's .venv.

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

# A C toolchain (Rust links with cc), curl, venv support and the shared libpython that
# pyo3's Rust-side tests link against.
ensure_system_packages() {
    local missing=()
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    python3 - <<'PY' || missing+=(python3-dev)
import os, sys, sysconfig
libdir = sysconfig.get_config_var("LIBDIR") or ""
ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
sys.exit(0 if ldlib.endswith(".so") and os.path.exists(os.path.join(libdir, ldlib)) else 1)
PY
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Creates .venv (once) and installs the given requirement arguments into it.
ensure_venv() {
    if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
    .venv/bin/python -m pip install -q --upgrade pip
    if [ $# -gt 0 ]; then .venv/bin/python -m pip install -q "$@"; fi
}

# What only the test suite needs: nginx, run in front of wharf by the proxy tests
# (tests/server/test_behind_nginx.py; the package's own service is not started).
ensure_test_packages() {
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then apt_install nginx; fi
}
