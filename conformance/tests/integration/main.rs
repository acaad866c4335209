//! The integration tests of `conformance`, one test binary (it links the crate and its dependencies once,
//! not once per file). Each file here is a module: `cargo test -p conformance --test integration -- <module>::`
//! runs one. Add a new test file here as a module; a file directly under `tests/` would become a
//! binary of its own (scripts/test.sh refuses that).
#![forbid(unsafe_code)]

mod aws;
mod common;
mod dcmtk;
mod deploy;
mod dicomweb;
mod durability;
mod hostile;
mod malformed;
mod model_check;
mod resend;
mod s3_upload;
mod segmentation;
mod statuses;
mod tls;
mod viewer;
