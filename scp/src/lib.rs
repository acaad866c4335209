//! The DICOM listener of segnode: C-ECHO and C-STORE over dicom-ul, with an association
//! policy, a durable spool (an instance is fsynced before its success status), back-pressure
//! on low disk, and study assembly (a quiet period, then stage + exactly one job).
//!
//! No `unsafe` except the read-only file mapping in [`guard`] (the structural scan of an instance
//! too large for the journal reads only its element headers, not the whole file into memory):
//! `deny` here, one `allow` there.
#![deny(unsafe_code)]

pub mod admission;
pub mod assembler;
mod association;
pub mod config;
pub mod disk;
pub mod guard;
pub mod journal;
mod listener;
pub mod metrics;
mod part10;
pub mod provenance;
mod receive;
pub mod sop;
pub mod spool;
pub mod tls;

/// The DIMSE command sets the listener parses and answers (the `dimse` crate's, shared with
/// delivery).
pub use ::dimse::command as dimse;
pub use config::{AllowedCaller, ScpConfig};
pub use listener::{Scp, ScpError};
pub use metrics::ScpMetrics;
