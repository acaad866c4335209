//! The integration tests of `scp`, one test binary (it links the crate and its dependencies once,
//! not once per file). Each file here is a module: `cargo test -p scp --test integration -- <module>::`
//! runs one. Add a new test file here as a module; a file directly under `tests/` would become a
//! binary of its own (scripts/test.sh refuses that).
#![forbid(unsafe_code)]

mod listener;
mod parse_props;
