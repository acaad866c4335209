//! The integration tests of `segmenter`, one test binary (it links the crate and its dependencies once,
//! not once per file). Each file here is a module: `cargo test -p segmenter --test integration -- <module>::`
//! runs one. Add a new test file here as a module; a file directly under `tests/` would become a
//! binary of its own (scripts/test.sh refuses that).
#![deny(unsafe_code)] // ndarray's s![] carries its own allow(unsafe_code)

mod common;
mod golden_model;
mod manifest_schema;
mod nifti;
mod patch3d_parity;
mod pipeline;
mod upload_props;
