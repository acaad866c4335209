//! DICOM UIDs: the one type for a UID received from a peer or a file, generated from a root or
//! in the 2.25 (UUID) form, or derived deterministically from a name.
//!
//! Two levels of checking, on purpose:
//! - [`Uid::new`] accepts what is safe to carry and to turn into a path or an object key: digits
//!   and dots, at most 64 characters, no empty component (trailing NUL/space padding, as found on
//!   the wire, is stripped). This is what every received UID must pass, so a hostile peer cannot
//!   send `../../etc` as a Study Instance UID.
//! - [`Uid::new_strict`] also refuses a multi-digit component with a leading zero (PS3.5 9.1).
//!   Used where we choose the UID (an organisation root for generated UIDs). A received UID with
//!   a leading zero is non-conformant but real devices send them; refusing it would lose the
//!   study, so received UIDs are only checked with [`Uid::new`] and [`Uid::is_conformant`] says
//!   whether it was conformant.

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
    #[error("UID {0:?} has a component with a leading zero (PS3.5 9.1)")]
    LeadingZero(String),
    #[error("UID root {0:?} is too long: it must leave room for 20 random digits (at most 43 characters)")]
    RootTooLong(String),
}

/// A checked DICOM UID (see the module documentation for the two levels of checking).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uid(String);

impl Uid {
    /// Digits and dots, at most 64 characters, no empty component; trailing NUL/space padding and
    /// leading spaces are stripped first.
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

    /// [`Uid::new`], and no multi-digit component starting with 0 (PS3.5 9.1).
    pub fn new_strict(raw: &str) -> Result<Self, UidError> {
        let uid = Uid::new(raw)?;
        if !uid.is_conformant() {
            return Err(UidError::LeadingZero(uid.0));
        }
        Ok(uid)
    }

    /// Whether the UID also meets PS3.5 9.1's rule that a component of more than one digit does
    /// not start with 0.
    pub fn is_conformant(&self) -> bool {
        self.0
            .split('.')
            .all(|c| c.len() == 1 || !c.starts_with('0'))
    }

    /// The UID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `2.25.<decimal>` form of a UUID (PS3.5 B.2).
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Uid(format!("2.25.{}", u.as_u128()))
    }

    /// A UID derived deterministically from `name` (UUID version 5 in the segnode namespace, 2.25
    /// form): the same name always yields the same UID, e.g. a job id yields the same SEG SOP
    /// Instance UID on redelivery.
    pub fn derived_from(name: &str) -> Self {
        Uid::from_uuid(uuid::Uuid::new_v5(&namespace(), name.as_bytes()))
    }
}

fn namespace() -> uuid::Uuid {
    // A fixed namespace for segnode-derived UIDs (UUIDv5 of the DNS name "dicom-seg.segnode"); it
    // must never change, or redelivered results would get new UIDs.
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"dicom-seg.segnode")
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

/// How new UIDs (series, dimension organisation, SOP instance when not supplied) are generated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UidGenerator {
    /// `2.25.<random UUID as a decimal integer>`.
    #[default]
    Uuid,
    /// `<root>.<random decimal>`, filled up to 64 characters with random digits (at least 20 of them).
    Root(Uid),
}

impl UidGenerator {
    /// A generator under an organisation root: a conformant UID ([`Uid::new_strict`]) that leaves
    /// room for 20 random digits.
    pub fn with_root(root: impl AsRef<str>) -> Result<Self, UidError> {
        let root = Uid::new_strict(root.as_ref())?;
        if root.as_str().len() > 64 - 21 {
            return Err(UidError::RootTooLong(root.0));
        }
        Ok(UidGenerator::Root(root))
    }

    /// A fresh UID.
    pub fn generate(&self) -> Uid {
        self.uid_of(uuid::Uuid::new_v4())
    }

    /// A UID deterministically derived from `name` in this generator's form.
    pub fn derive(&self, name: &str) -> Uid {
        self.uid_of(uuid::Uuid::new_v5(&namespace(), name.as_bytes()))
    }

    fn uid_of(&self, u: uuid::Uuid) -> Uid {
        match self {
            UidGenerator::Uuid => Uid::from_uuid(u),
            UidGenerator::Root(root) => {
                let room = 64 - root.0.len() - 1;
                let mut digits = u.as_u128().to_string();
                digits.truncate(room);
                // A component must not start with 0 (unless it is "0").
                let digits = digits.trim_start_matches('0');
                let digits = if digits.is_empty() { "0" } else { digits };
                Uid(format!("{}.{}", root.0, digits))
            }
        }
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
        assert_eq!(Uid::new("\0"), Err(UidError::Empty));
        assert!(matches!(Uid::new("../1.2"), Err(UidError::BadCharacter(_))));
        assert!(matches!(Uid::new("1.2/3"), Err(UidError::BadCharacter(_))));
        assert!(matches!(Uid::new("1.2a"), Err(UidError::BadCharacter(_))));
        assert!(matches!(Uid::new(".."), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new("1..2"), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new(".1.2"), Err(UidError::EmptyComponent(_))));
        assert!(matches!(Uid::new("1.2."), Err(UidError::EmptyComponent(_))));
        assert_eq!(Uid::new(&"1".repeat(65)), Err(UidError::TooLong(65)));
        assert!(Uid::new(&"1".repeat(64)).is_ok());
    }

    #[test]
    fn leading_zeros_are_carried_but_not_conformant() {
        // Real devices send them; a received UID is kept, a chosen one must be conformant.
        let u = Uid::new("1.2.02").unwrap();
        assert!(!u.is_conformant());
        assert!(Uid::new("1.0.2").unwrap().is_conformant());
        assert!(matches!(
            Uid::new_strict("1.02"),
            Err(UidError::LeadingZero(_))
        ));
        assert!(Uid::new_strict("1.2.840.10008.5.1.4.1.1.66.4").is_ok());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Uid>("\"1.2.3\"").is_ok());
        assert!(serde_json::from_str::<Uid>("\"1.2/../3\"").is_err());
        assert_eq!(
            serde_json::to_string(&Uid::new("1.2.3").unwrap()).unwrap(),
            "\"1.2.3\""
        );
    }

    #[test]
    fn generated_uids_are_conformant_and_distinct() {
        let g = UidGenerator::with_root("1.2.826.0.1.3680043.10.999").unwrap();
        let a = g.generate();
        let b = g.generate();
        assert_ne!(a, b);
        for u in [&a, &b] {
            assert!(Uid::new_strict(u.as_str()).is_ok());
            assert!(u.as_str().starts_with("1.2.826.0.1.3680043.10.999."));
        }
        let u = UidGenerator::Uuid.generate();
        assert!(Uid::new_strict(u.as_str()).is_ok());
        assert!(u.as_str().starts_with("2.25."));
        assert!(matches!(
            UidGenerator::with_root("1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21"),
            Err(UidError::RootTooLong(_))
        ));
        assert!(matches!(
            UidGenerator::with_root("1.2.03"),
            Err(UidError::LeadingZero(_))
        ));
    }

    #[test]
    fn derived_uids_are_stable() {
        assert_eq!(Uid::derived_from("job-1"), Uid::derived_from("job-1"));
        assert_ne!(Uid::derived_from("job-1"), Uid::derived_from("job-2"));
        assert!(Uid::new_strict(Uid::derived_from("job-1").as_str()).is_ok());
        // The namespace is part of the contract: a redelivered job must get the same SEG UID.
        assert_eq!(
            UidGenerator::Uuid.derive("job-1"),
            Uid::derived_from("job-1")
        );
    }
}
