//! DICOM UIDs that are safe to turn into paths and object keys: the one [`Uid`] type of
//! `dicom-values`, which every received UID passes through (see its documentation).

pub use dicom_values::{Uid, UidError};
