//! The key layout of the object store, shared by every room (see ARCHITECTURE.md, "Contracts").

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::uid::Uid;

/// A key in the object store: a relative, slash-separated path with no `.`/`..` segments.
///
/// Keys built from UIDs go through [`ObjectKey::incoming`] / [`ObjectKey::result`]; other
/// keys (listing results, S3 event notifications) are checked by [`ObjectKey::new`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a valid object key: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: &'static str,
}

pub const INCOMING_PREFIX: &str = "incoming/";
pub const RESULTS_PREFIX: &str = "results/";

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("empty")
        } else if key.len() > 1024 {
            Some("longer than 1024 bytes")
        } else if key.starts_with('/') || key.contains('\\') || key.contains('\0') {
            Some("absolute, or contains a backslash or NUL")
        } else if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            Some("has an empty, '.' or '..' segment")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(KeyError { key, reason }),
            None => Ok(ObjectKey(key)),
        }
    }

    /// `incoming/{study}/{series}/{sop}.dcm`
    pub fn incoming(study: &Uid, series: &Uid, sop: &Uid) -> Self {
        ObjectKey(format!("{INCOMING_PREFIX}{study}/{series}/{sop}.dcm"))
    }

    /// `incoming/{study}/`: the prefix under which a study's instances live.
    pub fn incoming_study_prefix(study: &Uid) -> String {
        format!("{INCOMING_PREFIX}{study}/")
    }

    /// `results/{study}/{sop}.dcm`
    pub fn result(study: &Uid, sop: &Uid) -> Self {
        ObjectKey(format!("{RESULTS_PREFIX}{study}/{sop}.dcm"))
    }

    /// If this is an `incoming/{study}/{series}/{sop}.dcm` key, its three UIDs.
    pub fn parse_incoming(&self) -> Option<(Uid, Uid, Uid)> {
        let rest = self.0.strip_prefix(INCOMING_PREFIX)?;
        let mut parts = rest.split('/');
        let study = Uid::new(parts.next()?).ok()?;
        let series = Uid::new(parts.next()?).ok()?;
        let sop = Uid::new(parts.next()?.strip_suffix(".dcm")?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some((study, series, sop))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ObjectKey::new(s)
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let (st, se, so) = (
            Uid::new("1.2").unwrap(),
            Uid::new("1.2.3").unwrap(),
            Uid::new("1.2.3.4").unwrap(),
        );
        let k = ObjectKey::incoming(&st, &se, &so);
        assert_eq!(k.as_str(), "incoming/1.2/1.2.3/1.2.3.4.dcm");
        assert_eq!(k.parse_incoming(), Some((st.clone(), se, so.clone())));
        assert_eq!(
            ObjectKey::result(&st, &so).as_str(),
            "results/1.2/1.2.3.4.dcm"
        );
    }

    #[test]
    fn rejects_traversal() {
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a/", "a\\b"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad}");
        }
        assert!(ObjectKey::new("uploads/study 1/x.dcm").is_ok());
    }
}
