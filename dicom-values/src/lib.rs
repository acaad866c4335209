//! Parsed DICOM value types shared by every segnode crate, so that a value is checked once, where
//! it enters, and carried typed from there: [`Uid`] (received, generated or derived) and
//! [`AeTitle`] / [`AeAddr`] (who we talk to). In the spirit of dicom-rs's `FullAeAddr`: parse,
//! don't validate twice.
#![forbid(unsafe_code)]

mod ae;
mod uid;

pub use ae::{AeAddr, AeAddrError, AeTitle, AeTitleError};
pub use uid::{Uid, UidError, UidGenerator};

/// A received text value without its padding: NULs (UI values are padded with one) and
/// whitespace at either end (PS3.5 6.2: leading and trailing spaces are not significant in the
/// string VRs segnode reads); `None` when nothing is left. The one trimming rule of every reader
/// of DICOM text in segnode (the pre-scan, the command sets, the study and SEG readers).
pub fn trimmed(value: &str) -> Option<&str> {
    let t = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimmed_drops_padding_at_both_ends_and_empty_values() {
        assert_eq!(super::trimmed("1.2.3\0"), Some("1.2.3"));
        assert_eq!(super::trimmed(" MR \0"), Some("MR"));
        assert_eq!(super::trimmed("\0 A B "), Some("A B"));
        assert_eq!(super::trimmed(" \0 "), None);
        assert_eq!(super::trimmed(""), None);
    }
}
