#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the real peers, build once, test everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# The build (~2.5 GB) and the nodes under test (which refuse work below 1 GiB free) need room;
# say so up front rather than as a linker crash or a refused association.
free_mb=$(df -Pm . | awk 'NR == 2 { print $4 }')
if [ "$free_mb" -lt 4096 ]; then
  echo "test.sh: only ${free_mb} MiB free on $(df -P . | awk 'NR == 2 { print $6 }'); the build and tests need about 4 GiB" >&2
  exit 1
fi
# A clean clone gains nothing from incremental caches; they only take disk.
# Nor from debug info: a CI failure is read from the panic's message and file:line (compiled in,
# kept) and the backtrace's function names (the symbol table, kept); line tables in every one of
# the ~20 test binaries, the Rust standard library's included, were ~260 MB of target/'s 2.3 GiB
# (bench/build/RESULTS.md, session 13). A developer's `cargo test` keeps Cargo.toml's line tables.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_DEV_STRIP=debuginfo
fi

# One integration-test binary per crate (<crate>/tests/integration/main.rs, its files are modules):
# a file directly under <crate>/tests/ would link the heavy dependencies into a binary of its own.
stray=$(ls -- */tests/*.rs 2>/dev/null || true)
if [ -n "$stray" ]; then
  echo "test.sh: move these into <crate>/tests/integration/ as modules (mod NAME; in main.rs):" >&2
  echo "$stray" >&2
  exit 1
fi

# One build shared by every test binary (the dev profile: opt-level 1, inference at 3; Cargo.toml says why).
# --all-features: the binary under test has the AWS backends (the `aws` feature, which the
# README's first command leaves out), so the S3/SQS/ECS tests against moto run too.
# The tests and the binaries they run; the benchmark tools under */examples/ are type-checked and
# linted by clippy below (--all-targets) but not linked: three executables (~100 MB) no test runs.
cargo build --locked --workspace --bins --tests --all-features
# (CARGO_TARGET_DIR, if set, is where cargo built it; a relative one is relative to here)
export SEGNODE_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/segnode"
export SEGNODE_PEERS_VENV="$PWD/.venv-peers"
# Four at a time: most of a conformance test is waiting on its peers (storescu, Orthanc, moto,
# Chromium) and on quiet periods. Its 59 tests on 2 cores, same build, back to back: 203 s with 2
# threads, 123 s with 4, 105 s with 6 (where the longest test stretched from 39 s to 49 s).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
# and the binary as the README's first command builds it (no `aws` feature)
cargo clippy --locked -p segnode -- -D warnings
# --tests: every unit and integration test, without linking the examples (cargo test links them
# by default); --doc: the documentation tests (cargo refuses --doc beside --tests). Both run
# whatever the first gives, as one --no-fail-fast run did; the script fails if either failed.
status=0
cargo test --locked --workspace --all-features --no-fail-fast --tests || status=$?
cargo test --locked --workspace --all-features --no-fail-fast --doc || status=$?
exit "$status"
