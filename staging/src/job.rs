//! The versioned job message that travels on the queue from the SCP to the workers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::ObjectKey;
use crate::uid::Uid;

/// The message format version this build writes and understands.
pub const JOB_VERSION: u32 = 1;

/// One instance of the study, as staged in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObject {
    pub key: ObjectKey,
    pub series_uid: Uid,
    pub sop_uid: Uid,
}

/// Where a job's result goes besides the results store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResultTarget {
    /// Extra C-STORE destinations (`AET@host:port`) for this job, on top of the worker's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// A request to segment one study: everything a worker needs, nothing it must look up elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub version: u32,
    /// Stable for a given study content: the same instances give the same id, so a
    /// re-emitted job (after a crash) is recognised and the SEG UID derived from it repeats.
    pub job_id: String,
    pub study_uid: Uid,
    pub objects: Vec<JobObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae: Option<String>,
    /// When the SCP emitted the job, milliseconds since the Unix epoch.
    pub received_at_unix_ms: u64,
    #[serde(default)]
    pub results: ResultTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job message is not valid JSON for version {JOB_VERSION}: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("job message has version {found}; this build understands version {JOB_VERSION} (upgrade the worker)")]
    UnsupportedVersion { found: u64 },
    #[error("job {job_id} lists object {key} which is not under incoming/{study}/")]
    ForeignObject {
        job_id: String,
        key: String,
        study: String,
    },
}

impl Job {
    /// Build a job for `study` from its staged objects. The id is derived from the study UID
    /// and the sorted object keys.
    pub fn new(
        study_uid: Uid,
        mut objects: Vec<JobObject>,
        calling_ae: Option<String>,
        received_at_unix_ms: u64,
    ) -> Self {
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects.dedup_by(|a, b| a.key == b.key);
        let job_id = derive_job_id(&study_uid, objects.iter().map(|o| o.key.as_str()));
        Job {
            version: JOB_VERSION,
            job_id,
            study_uid,
            objects,
            calling_ae,
            received_at_unix_ms,
            results: ResultTarget::default(),
        }
    }

    /// Like [`Job::new`], with the id derived from the content as well: `content` is a digest
    /// of the bytes received for this emission (see [`content_digest`]). A corrected image
    /// sent again under the same UIDs then gives a new job (it is re-segmented), while a
    /// byte-identical resend gives the same id and is dropped by the queue as a duplicate.
    pub fn with_content(
        study_uid: Uid,
        objects: Vec<JobObject>,
        content: &str,
        calling_ae: Option<String>,
        received_at_unix_ms: u64,
    ) -> Self {
        let mut job = Job::new(study_uid, objects, calling_ae, received_at_unix_ms);
        let keys = job.objects.iter().map(|o| o.key.as_str());
        job.job_id = derive_job_id(&job.study_uid, keys.chain([content]));
        job
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Job always serialises")
    }

    /// Parse a job message, checking the version first so an old worker says why it cannot
    /// read a newer message instead of reporting a missing field.
    pub fn from_json(text: &str) -> Result<Self, JobError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u64,
        }
        let probe: Probe = serde_json::from_str(text)?;
        if probe.version != u64::from(JOB_VERSION) {
            return Err(JobError::UnsupportedVersion {
                found: probe.version,
            });
        }
        let job: Job = serde_json::from_str(text)?;
        let prefix = ObjectKey::incoming_study_prefix(&job.study_uid);
        if let Some(o) = job
            .objects
            .iter()
            .find(|o| !o.key.as_str().starts_with(&prefix))
        {
            return Err(JobError::ForeignObject {
                job_id: job.job_id,
                key: o.key.to_string(),
                study: job.study_uid.to_string(),
            });
        }
        Ok(job)
    }
}

/// A digest of received instances: SHA-256 over each (name, SHA-256 of its bytes), in the
/// order given (callers sort by name).
pub fn content_digest<'a>(items: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in items {
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(Sha256::digest(bytes));
    }
    format!("content:{:x}", h.finalize())
}

/// A UUID-formatted id from SHA-256 of the study UID and the keys (in the order given).
pub fn derive_job_id<'a>(study: &Uid, keys: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(study.as_str().as_bytes());
    for k in keys {
        h.update(b"\n");
        h.update(k.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // Mark it as an RFC 9562 version 8 (custom) UUID so it reads as what it is.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_content_under_the_same_keys_changes_the_job_id() {
        let study = Uid::new("1.2.3").unwrap();
        let objects = vec![obj("1.2.3", "1.2.3.1", "1.2.3.1.1")];
        let a = content_digest([("1.2.3.1.1", &b"pixels"[..])].into_iter());
        let b = content_digest([("1.2.3.1.1", &b"pixelz"[..])].into_iter());
        let ja = Job::with_content(study.clone(), objects.clone(), &a, None, 0);
        let ja2 = Job::with_content(study.clone(), objects.clone(), &a, None, 5);
        let jb = Job::with_content(study, objects, &b, None, 0);
        assert_eq!(ja.job_id, ja2.job_id, "an identical resend is a duplicate");
        assert_ne!(ja.job_id, jb.job_id, "a corrected image is new work");
    }

    fn obj(study: &str, series: &str, sop: &str) -> JobObject {
        let (st, se, so) = (
            Uid::new(study).unwrap(),
            Uid::new(series).unwrap(),
            Uid::new(sop).unwrap(),
        );
        JobObject {
            key: ObjectKey::incoming(&st, &se, &so),
            series_uid: se,
            sop_uid: so,
        }
    }

    #[test]
    fn id_is_stable_for_same_content_and_differs_otherwise() {
        let st = Uid::new("1.2").unwrap();
        let a = Job::new(
            st.clone(),
            vec![obj("1.2", "1.3", "1.4"), obj("1.2", "1.3", "1.5")],
            None,
            1,
        );
        let b = Job::new(
            st.clone(),
            vec![obj("1.2", "1.3", "1.5"), obj("1.2", "1.3", "1.4")],
            Some("X".into()),
            2,
        );
        let c = Job::new(st, vec![obj("1.2", "1.3", "1.4")], None, 1);
        assert_eq!(a.job_id, b.job_id);
        assert_ne!(a.job_id, c.job_id);
    }

    #[test]
    fn json_round_trip_and_version_check() {
        let job = Job::new(
            Uid::new("1.2").unwrap(),
            vec![obj("1.2", "1.3", "1.4")],
            Some("SCANNER".into()),
            42,
        );
        let back = Job::from_json(&job.to_json()).unwrap();
        assert_eq!(back, job);
        let newer = job.to_json().replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            Job::from_json(&newer),
            Err(JobError::UnsupportedVersion { found: 2 })
        ));
        let foreign = job.to_json().replace("incoming/1.2/", "incoming/9.9/");
        assert!(matches!(
            Job::from_json(&foreign),
            Err(JobError::ForeignObject { .. })
        ));
        let evil = job
            .to_json()
            .replace("incoming/1.2/1.3/1.4.dcm", "incoming/1.2/../../x");
        assert!(Job::from_json(&evil).is_err());
    }
}
