#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the real peers, build once, test everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# One build shared by every test binary (dependencies are optimised even in the dev profile).
cargo build --locked --workspace --all-targets
export SEGNODE_BIN="$PWD/target/debug/segnode"
export SEGNODE_PEERS_VENV="$PWD/.venv-peers"
# Two cores: more parallel tests only make the servers under test fight for them.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo fmt --all -- --check
cargo test --locked --workspace --no-fail-fast
