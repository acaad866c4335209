//! The integration tests of `dicom-seg`, one test binary (it links the crate and its dependencies once,
//! not once per file). Each file here is a module: `cargo test -p dicom-seg --test integration -- <module>::`
//! runs one. Add a new test file here as a module; a file directly under `tests/` would become a
//! binary of its own (scripts/test.sh refuses that).
#![deny(unsafe_code)] // ndarray's s![] carries its own allow(unsafe_code)

mod common;
mod peers;
mod roundtrip;
