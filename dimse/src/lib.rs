//! The DICOM message layer segnode speaks, shared by the listener (`scp`), delivery (`segmenter`)
//! and the demo:
//! - [`scan`]: a bounded structural scan of a data set before anything parses it (nesting depth,
//!   declared lengths, element counts), so a hostile object is refused without allocating what it
//!   declares or recursing as deep as it nests;
//! - [`command`]: DIMSE command sets (C-ECHO, C-STORE requests and responses, PS3.7), encoded in
//!   Implicit VR Little Endian with their group length;
//! - [`part10`]: what a received Part-10 object says it is (study, series and SOP UIDs), read after
//!   the scan; one reading for the listener and the S3 upload path;
//! - [`scu`]: a C-STORE SCU over plain TCP or DICOM TLS (one association, one presentation
//!   context per SOP class and transfer syntax).
//! - [`tls`]: PEM certificates for DICOM TLS (listener and delivery read them the same way).
//!
//! The value types (UIDs, AE titles and addresses) are `dicom-values`'s, re-exported here.
#![forbid(unsafe_code)]

pub mod command;
pub mod part10;
pub mod scan;
pub mod scu;
pub mod tls;

pub use command::{Command, CommandError, Status};
pub use dicom_values::{AeAddr, AeAddrError, AeTitle, AeTitleError};
pub use scu::{Part10, ScuError, ScuOptions};

/// Implicit VR Little Endian, the transfer syntax of every command set and the one every SCP
/// must accept.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
