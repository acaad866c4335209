//! Parsed DICOM value types shared by every segnode crate, so that a value is checked once, where
//! it enters, and carried typed from there: [`Uid`] (received, generated or derived) and
//! [`AeTitle`] / [`AeAddr`] (who we talk to). In the spirit of dicom-rs's `FullAeAddr`: parse,
//! don't validate twice.
#![forbid(unsafe_code)]

mod ae;
mod uid;

pub use ae::{AeAddr, AeAddrError, AeTitle, AeTitleError};
pub use uid::{Uid, UidError, UidGenerator};
