//! The integration tests of `dimse`, one test binary. Each file here is a module:
//! `cargo test -p dimse --test integration -- <module>::` runs one.
#![forbid(unsafe_code)]

mod scan_props;
