#!/usr/bin/env bash
# The whole test suite: unit, integration and end-to-end tests against real processes.
# The end-to-end tests spawn the compiled binaries, so they are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
