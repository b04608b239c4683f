#!/usr/bin/env bash
# The whole test suite, from a fresh clone: ./scripts/test.sh
# Installs what it needs (Debian packages when missing, Python packages into .venv), runs the
# toolchain gate (rustfmt, clippy, ruff), the Rust tests, builds and installs the wharf wheel,
# then runs every pytest suite under tests/.
# Extra arguments are passed to pytest (e.g. ./scripts/test.sh -k environ).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source-path=SCRIPTDIR source=common.sh
. scripts/common.sh

ensure_system_packages
ensure_test_packages

log "Python environment (.venv)"
ensure_venv -r tests/requirements.txt -c tests/constraints.txt
export PATH="$root/.venv/bin:$PATH"
export PYO3_PYTHON="$root/.venv/bin/python"

log "Toolchain gate (rustfmt, clippy, ruff)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
ruff check tests bench

log "Rust tests (cargo test --workspace)"
cargo test --workspace --quiet

log "Model-checking the server's cross-thread primitives (scripts/loom.sh)"
./scripts/loom.sh

log "Portability: the server compiles for macOS (cargo check --target x86_64-apple-darwin)"
# Linux-only tuning sits behind cfg(target_os = "linux"); this keeps it so. Skipped (with the
# reason) when rustup cannot add the target, e.g. without access to the Rust distribution server.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-apple-darwin \
    || rustup target add x86_64-apple-darwin >/dev/null 2>&1; then
    # Without otlp-tls: ring's C code needs a compiler for the target, which Linux lacks.
    cargo check --quiet --target x86_64-apple-darwin -p wharf-server --no-default-features --features pyo3/abi3-py39
else
    echo "SKIP macOS check: rustup cannot add the x86_64-apple-darwin target here"
fi

log "Building and installing the wharf wheel"
rm -rf dist
maturin build --release --quiet -o dist
pip install -q --force-reinstall --no-deps dist/wharf_wsgi-*.whl

log "Python test suites (pytest tests/)"
pytest tests -q -ra "$@"
