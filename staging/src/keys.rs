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
/// Where people (or their scripts) drop studies into the bucket: `uploads/<name>.zip`, or the
/// files of a folder `uploads/<name>/...` followed by an empty `uploads/<name>/COMPLETE`.
pub const UPLOADS_PREFIX: &str = "uploads/";
/// The file name of the marker that says an uploaded folder is complete.
pub const UPLOAD_COMPLETE_MARKER: &str = "COMPLETE";

/// What an `uploads/` key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadKey {
    /// `uploads/<anything>.zip`: one archive holding the study.
    Zip,
    /// `uploads/<name>/COMPLETE`: the folder `uploads/<name>/` (this prefix) is complete.
    Folder { prefix: String },
}

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

    /// `incoming/{study}/jobs/{job_id}.json`: the object list of a job too big for one queue
    /// message (see [`crate::Job::to_message`]); beside the study, so it expires with it. Not an
    /// instance key: [`ObjectKey::parse_incoming`] says None.
    pub fn job_manifest(study: &Uid, job_id: &str) -> Result<Self, KeyError> {
        ObjectKey::new(format!("{INCOMING_PREFIX}{study}/jobs/{job_id}.json"))
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

    /// If this is an upload (`uploads/....zip` or `uploads/<name>/COMPLETE`), which kind.
    /// The key itself was already checked by [`ObjectKey::new`] (no `.`/`..`/empty segment), so
    /// a folder prefix derived from it cannot reach outside `uploads/`.
    pub fn parse_upload(&self) -> Option<UploadKey> {
        let rest = self.0.strip_prefix(UPLOADS_PREFIX)?;
        if rest.to_ascii_lowercase().ends_with(".zip") && !rest.ends_with('/') {
            return Some(UploadKey::Zip);
        }
        let folder = rest
            .strip_suffix(UPLOAD_COMPLETE_MARKER)?
            .strip_suffix('/')?;
        if folder.is_empty() {
            return None;
        }
        Some(UploadKey::Folder {
            prefix: format!("{UPLOADS_PREFIX}{folder}/"),
        })
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

    #[test]
    fn upload_keys() {
        let k = |s: &str| ObjectKey::new(s).unwrap().parse_upload();
        assert_eq!(k("uploads/brain scan.zip"), Some(UploadKey::Zip));
        assert_eq!(k("uploads/a/b/STUDY.ZIP"), Some(UploadKey::Zip));
        assert_eq!(
            k("uploads/study 7/COMPLETE"),
            Some(UploadKey::Folder {
                prefix: "uploads/study 7/".into()
            })
        );
        assert_eq!(
            k("uploads/site/a/COMPLETE"),
            Some(UploadKey::Folder {
                prefix: "uploads/site/a/".into()
            })
        );
        // No folder name, not a marker, not under uploads/.
        assert_eq!(k("uploads/COMPLETE"), None);
        assert_eq!(k("uploads/study/x.dcm"), None);
        assert_eq!(k("uploads/study/NOTCOMPLETE"), None);
        assert_eq!(k("incoming/a.zip"), None);
        assert_eq!(k("results/1.2/COMPLETE"), None);
        // Traversal never gets this far.
        assert!(ObjectKey::new("uploads/../incoming/COMPLETE").is_err());
    }
}
