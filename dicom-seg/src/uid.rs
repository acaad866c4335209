//! DICOM UIDs: validation, generation from a root or in the 2.25 (UUID) form, deterministic
//! derivation. The types live in `dicom-values`, shared by every segnode crate.

pub use dicom_values::{Uid, UidError, UidGenerator};
