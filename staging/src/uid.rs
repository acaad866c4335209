//! DICOM UIDs that are safe to turn into paths and object keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is {0} characters long; DICOM allows at most 64")]
    TooLong(usize),
    #[error("UID {0:?} contains a character other than a digit or '.'")]
    BadCharacter(String),
    #[error("UID {0:?} has an empty component (leading, trailing or doubled '.')")]
    EmptyComponent(String),
}

/// A validated DICOM UID: digits and dots only, at most 64 characters, no empty component.
///
/// This is the only way a UID becomes part of a filesystem path or an object key, so a
/// hostile peer cannot send `../../etc` as a Study Instance UID and escape the spool.
/// Trailing NUL/space padding (as found on the wire) is stripped before checking.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uid(String);

impl Uid {
    pub fn new(raw: &str) -> Result<Self, UidError> {
        let uid = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if uid.is_empty() {
            return Err(UidError::Empty);
        }
        if uid.len() > 64 {
            return Err(UidError::TooLong(uid.len()));
        }
        if !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UidError::BadCharacter(uid.to_string()));
        }
        if uid.split('.').any(str::is_empty) {
            return Err(UidError::EmptyComponent(uid.to_string()));
        }
        Ok(Uid(uid.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::new(s)
    }
}

impl TryFrom<String> for Uid {
    type Error = UidError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Uid::new(&s)
    }
}

impl From<Uid> for String {
    fn from(u: Uid) -> String {
        u.0
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_uids_and_strips_padding() {
        assert_eq!(
            Uid::new("1.2.840.10008.5.1.4.1.1.4").unwrap().as_str(),
            "1.2.840.10008.5.1.4.1.1.4"
        );
        assert_eq!(Uid::new("1.2.3\0").unwrap().as_str(), "1.2.3");
        assert_eq!(Uid::new("2.25.123 ").unwrap().as_str(), "2.25.123");
    }

    #[test]
    fn rejects_anything_that_could_escape_a_path() {
        assert_eq!(Uid::new(""), Err(UidError::Empty));
        assert!(matches!(Uid::new("../1.2"), Err(UidError::BadCharacter(_))));
        assert!(matches!(Uid::new("1.2/3"), Err(UidError::BadCharacter(_))));
        assert!(matches!(Uid::new(".."), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new("1..2"), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new(".1.2"), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new("1.2."), Err(UidError::EmptyComponent(_))));
        assert!(matches!(
            Uid::new(&"1".repeat(65)),
            Err(UidError::TooLong(65))
        ));
        assert!(Uid::new(&"1".repeat(64)).is_ok());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Uid>("\"1.2.3\"").is_ok());
        assert!(serde_json::from_str::<Uid>("\"1.2/../3\"").is_err());
    }
}
