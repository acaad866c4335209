//! DICOM UIDs: validation, generation from a root or in the 2.25 (UUID) form, deterministic derivation.

use crate::error::{Result, SegError};
use std::fmt;

/// A validated DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters, no empty component,
/// no leading zero in a component of more than one digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

impl Uid {
    /// Validates `s` (surrounding spaces and a trailing NUL pad are trimmed).
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref().trim_end_matches('\0').trim();
        validate(s)?;
        Ok(Uid(s.to_string()))
    }

    /// The UID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `2.25.<decimal>` form of a UUID (PS3.5 B.2).
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Uid(format!("2.25.{}", u.as_u128()))
    }

    /// A UID derived deterministically from `name` (UUID version 5 in the segnode namespace, 2.25 form):
    /// the same name always yields the same UID, e.g. a job id yields the same SEG SOP Instance UID on
    /// redelivery.
    pub fn derived_from(name: &str) -> Self {
        Uid::from_uuid(uuid::Uuid::new_v5(&namespace(), name.as_bytes()))
    }
}

fn namespace() -> uuid::Uuid {
    // A fixed namespace for segnode-derived UIDs (UUIDv5 of the DNS name "dicom-seg.segnode").
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"dicom-seg.segnode")
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<()> {
    let bad = |reason| {
        Err(SegError::InvalidUid {
            uid: s.to_string(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 64 {
        return bad("longer than 64 characters");
    }
    for comp in s.split('.') {
        if comp.is_empty() {
            return bad("empty component");
        }
        if !comp.bytes().all(|b| b.is_ascii_digit()) {
            return bad("only digits and dots are allowed");
        }
        if comp.len() > 1 && comp.starts_with('0') {
            return bad("component with a leading zero");
        }
    }
    Ok(())
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
    /// A generator under an organisation root; the root must leave room for 20 random digits.
    pub fn with_root(root: impl AsRef<str>) -> Result<Self> {
        let root = Uid::new(root)?;
        if root.as_str().len() > 64 - 21 {
            return Err(SegError::InvalidUid {
                uid: root.0,
                reason:
                    "root too long: it must leave room for 20 random digits (at most 43 characters)",
            });
        }
        Ok(UidGenerator::Root(root))
    }

    /// A fresh UID.
    pub fn generate(&self) -> Uid {
        let u = uuid::Uuid::new_v4();
        self.uid_of(u)
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
    fn validates() {
        assert!(Uid::new("1.2.840.10008.5.1.4.1.1.66.4").is_ok());
        assert!(Uid::new("1.2.840.10008.5.1.4.1.1.66.4\0").is_ok());
        assert!(Uid::new("1..2").is_err());
        assert!(Uid::new("1.02").is_err());
        assert!(Uid::new("1.2a").is_err());
        assert!(Uid::new("").is_err());
        assert!(Uid::new(format!("1.{}", "2".repeat(63))).is_err());
    }

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        let g = UidGenerator::with_root("1.2.826.0.1.3680043.10.999").unwrap();
        let a = g.generate();
        let b = g.generate();
        assert_ne!(a, b);
        for u in [&a, &b] {
            Uid::new(u.as_str()).unwrap();
            assert!(u.as_str().starts_with("1.2.826.0.1.3680043.10.999."));
        }
        let u = UidGenerator::Uuid.generate();
        Uid::new(u.as_str()).unwrap();
        assert!(u.as_str().starts_with("2.25."));
        assert!(
            UidGenerator::with_root("1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21")
                .is_err()
        );
    }

    #[test]
    fn derived_uids_are_stable() {
        assert_eq!(Uid::derived_from("job-1"), Uid::derived_from("job-1"));
        assert_ne!(Uid::derived_from("job-1"), Uid::derived_from("job-2"));
        Uid::new(Uid::derived_from("job-1").as_str()).unwrap();
    }
}
