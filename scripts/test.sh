#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the real peers, build once, test everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

# A clean clone gains nothing from incremental caches; they only take disk.
# Nor from debug info or symbol tables, at a price: a CI failure is read from the panic's message
# and file:line (compiled in, kept either way), but with RUST_BACKTRACE set (this project's
# machines set it) the backtrace under it prints without frames. Line tables in the ~20 test
# binaries were ~260 MB of target/'s 2.3 GiB (bench/build/RESULTS.md, session 13), the symbol
# tables another 132 MB (session 15), which took the build under issue 20's 2 GB. To read a CI
# failure's backtrace, rerun the test locally: a developer's `cargo test` keeps Cargo.toml's line
# tables and the symbols.
# The strip goes through RUSTFLAGS: CARGO_PROFILE_DEV_STRIP does not reach the crates that have a
# [profile.dev.package.X] table in Cargo.toml (cargo gives them strip = "debuginfo", the default
# without debug info), and rustc takes the last -C strip it is given, RUSTFLAGS' (session 15).
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG=false
  export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C strip=symbols"
fi

# The CI build cache. A clean clone builds ~1,500 CPU-s of dependencies (tract, the AWS SDK,
# rustls, dicom-rs) before its first test: ~10 of the ~16 minutes on 2 cores
# (bench/build/RESULTS.md). Under CI=true the clone's target/ is a link to a per-user folder
# keyed on the toolchain and the locked dependencies, like the reference venv beside it: the next clean
# clone on this machine reuses the dependencies' artifacts, and rebuilds only this
# repository's crates (cargo's artifact names are relative to the workspace, so they are the
# same files in every clone, not one set per clone). A new toolchain, Cargo.lock, profile or
# third_party/ (the patched tract-core) starts a new key and the old one is removed; one CI
# run at a time holds the cache (a second waits: it would otherwise rebuild the segnode
# binary the first one's tests are running). Cold, it is the same build as without it.
# SEGNODE_CI_CACHE=off builds in the clone's own target/.
cache_root="${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/segnode/cargo-target"
# (without git, flock or a writable cache folder the build stays in the clone, as before)
if [ "${CI:-}" = true ] && [ "${SEGNODE_CI_CACHE:-on}" != off ] && [ -z "${CARGO_TARGET_DIR:-}" ] \
  && [ ! -e target ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  && command -v flock >/dev/null && mkdir -p "$cache_root" 2>/dev/null && [ -w "$cache_root" ]; then
  # (and the profiles and flags, Cargo.toml's and the environment's: a change there renames
  # every artifact, which would otherwise pile up beside the old ones under the same key)
  key=$( { rustc -vV; cargo -V; cat Cargo.lock; git ls-files -s third_party
           sed -n '/^\[profile/,$p' Cargo.toml | grep -v '^[[:space:]]*#'
           env | grep -E '^(CARGO_(PROFILE_|INCREMENTAL)|RUSTFLAGS=)' | sort; } | sha256sum | cut -c1-16)
  exec 9>"$cache_root/.lock"
  if ! flock -n 9; then
    echo "test.sh: another CI run holds $cache_root; waiting for it" >&2
    flock 9
  fi
  for old in "$cache_root"/*/; do
    [ "$old" = "$cache_root/$key/" ] || rm -rf -- "$old"
  done
  mkdir -p "$cache_root/$key"
  # what a previous run's viewer/DICOMweb tests left for inspection belongs to that run
  rm -rf -- "$cache_root/$key/artifacts"
  # Cargo judges path crates by modification times, not content. A clone made before the
  # previous run built could be older than that run's artifacts of other sources and pass as
  # fresh; so, under the lock, every tracked file becomes newer than anything in the cache.
  # Except third_party/: its content is in the key, so its files get one fixed old time and
  # its crate (tract-core, and everything built on it) stays fresh across clones.
  git ls-files -z -- . ':!third_party' | xargs -0 touch -c --
  git ls-files -z -- third_party | xargs -0 touch -c -d @946684800 --
  ln -s "$cache_root/$key" target
  echo "test.sh: build cache $cache_root/$key ($(du -sh "$cache_root/$key" | cut -f1))" >&2
fi

# The build (~2 GB, in target/ or the CI cache) and the nodes under test (which refuse work below
# 1 GiB free) need room; say so up front rather than as a linker crash or a refused association.
for where in . target/; do
  [ -e "$where" ] || continue
  free_mb=$(df -Pm "$where" | awk 'NR == 2 { print $4 }')
  if [ "$free_mb" -lt 4096 ]; then
    echo "test.sh: only ${free_mb} MiB free on $(df -P "$where" | awk 'NR == 2 { print $6 }'); the build and tests need about 4 GiB" >&2
    exit 1
  fi
done

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
