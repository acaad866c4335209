//! The versioned job message that travels on the queue from the SCP to the workers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::ObjectKey;
use crate::store::{ObjectStore, StoreError};
use crate::uid::Uid;

/// The newest message format version this build writes and understands (see [`Job::to_message`]).
///
/// - Version 1: the job lists its objects inline. Still written for every job whose message
///   fits in [`MAX_INLINE_JOB_BYTES`], so workers of an older build keep working on them
///   during a rolling upgrade, and still read.
/// - Version 2: the object list is a manifest object in the store, beside the study
///   (`incoming/<study>/jobs/<job id>.json`), and the message names it ([`ManifestRef`]: key,
///   object count, SHA-256). Written only for jobs too big to be inline: an older worker
///   refuses it by its version ("upgrade the worker") instead of misreading it.
///
/// A message is therefore never larger than [`MAX_INLINE_JOB_BYTES`] (plus the small pointer),
/// whatever the size of the study: SQS refuses messages over the queue's `MaximumMessageSize`
/// (256 KiB for years and still where a queue is set so; 1 MiB at most since 2025).
pub const JOB_VERSION: u32 = 2;
/// The version whose messages list the objects inline.
pub const INLINE_JOB_VERSION: u32 = 1;
/// The largest message written with the objects inline; a larger job gets a manifest.
pub const MAX_INLINE_JOB_BYTES: usize = 64 * 1024;
/// Most objects one job may list; a manifest that says more is refused before it is read.
pub const MAX_JOB_OBJECTS: u64 = 100_000;
/// Most bytes of a manifest object (a few hundred bytes per object).
pub const MAX_MANIFEST_BYTES: usize = 1024 * MAX_JOB_OBJECTS as usize;

/// Where a version-2 job's object list is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    /// `incoming/<study>/jobs/<job id>.json`
    pub key: ObjectKey,
    /// How many objects it lists.
    pub objects: u64,
    /// SHA-256 of the manifest object's bytes, hex.
    pub sha256: String,
}

/// The manifest object of a version-2 job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobManifest {
    job_id: String,
    study_uid: Uid,
    objects: Vec<JobObject>,
}

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
    /// Version 2 only: where the object list is; `objects` is then empty until
    /// [`Job::load_objects`] reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "job message is not valid JSON for version {INLINE_JOB_VERSION} or {JOB_VERSION}: {0}"
    )]
    Malformed(#[from] serde_json::Error),
    #[error("job message has version {found}; this build understands versions {INLINE_JOB_VERSION} and {JOB_VERSION} (upgrade the worker)")]
    UnsupportedVersion { found: u64 },
    #[error("job {job_id}: {message}")]
    Inconsistent { job_id: String, message: String },
    #[error("job {job_id}: object list {key}: {message}")]
    Manifest {
        job_id: String,
        key: String,
        message: String,
    },
    /// The store failed while the manifest was written or read; trying again may help.
    #[error("job {job_id}: object list: {source}")]
    Store {
        job_id: String,
        #[source]
        source: StoreError,
    },
    #[error("job {job_id} lists object {key} which is not under incoming/{study}/")]
    ForeignObject {
        job_id: String,
        key: String,
        study: String,
    },
}

impl JobError {
    /// True when the failure is the store's (reading or writing a manifest): trying again may
    /// help. Every other error is in the message itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, JobError::Store { .. })
    }
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
            version: INLINE_JOB_VERSION,
            job_id,
            study_uid,
            objects,
            calling_ae,
            received_at_unix_ms,
            results: ResultTarget::default(),
            manifest: None,
        }
    }

    /// How many objects the job lists (inline, or in its manifest before it is loaded).
    pub fn object_count(&self) -> usize {
        match &self.manifest {
            Some(m) if self.objects.is_empty() => m.objects as usize,
            _ => self.objects.len(),
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

    /// This job as JSON, as it is (a job built by [`Job::new`] is a version-1 message with its
    /// objects inline, whatever their number: send [`Job::to_message`] instead).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Job always serialises")
    }

    /// The message to put on the queue: this job inline (version 1) when that fits in
    /// [`MAX_INLINE_JOB_BYTES`]; otherwise its object list is stored in `store` as a manifest
    /// beside the study (replacing any earlier one of the same job id: the same content) and
    /// the message (version 2) points at it.
    pub async fn to_message(&self, store: &dyn ObjectStore) -> Result<String, JobError> {
        let inline = self.to_json();
        if inline.len() <= MAX_INLINE_JOB_BYTES && self.manifest.is_none() {
            return Ok(inline);
        }
        let key = ObjectKey::job_manifest(&self.study_uid, &self.job_id).map_err(|e| {
            JobError::Inconsistent {
                job_id: self.job_id.clone(),
                message: e.to_string(),
            }
        })?;
        let manifest = serde_json::to_vec(&JobManifest {
            job_id: self.job_id.clone(),
            study_uid: self.study_uid.clone(),
            objects: self.objects.clone(),
        })
        .expect("a manifest always serialises");
        let sha256 = format!("{:x}", Sha256::digest(&manifest));
        store
            .put(&key, Bytes::from(manifest))
            .await
            .map_err(|source| JobError::Store {
                job_id: self.job_id.clone(),
                source,
            })?;
        let pointer = Job {
            version: JOB_VERSION,
            job_id: self.job_id.clone(),
            study_uid: self.study_uid.clone(),
            objects: Vec::new(),
            calling_ae: self.calling_ae.clone(),
            received_at_unix_ms: self.received_at_unix_ms,
            results: self.results.clone(),
            manifest: Some(ManifestRef {
                key,
                objects: self.objects.len() as u64,
                sha256,
            }),
        };
        Ok(pointer.to_json())
    }

    /// Parse a queue message and, for a version-2 one, read its object list from `store`.
    pub async fn from_message(text: &str, store: &dyn ObjectStore) -> Result<Self, JobError> {
        let mut job = Job::from_json(text)?;
        job.load_objects(store).await?;
        Ok(job)
    }

    /// A version-2 job: read its manifest from `store` (bounded by the count the message
    /// states, checked against its SHA-256) and fill `objects`. Nothing to do for version 1.
    pub async fn load_objects(&mut self, store: &dyn ObjectStore) -> Result<(), JobError> {
        let Some(m) = self.manifest.clone() else {
            return Ok(());
        };
        if !self.objects.is_empty() {
            return Ok(());
        }
        let fail = |message: String| JobError::Manifest {
            job_id: self.job_id.clone(),
            key: m.key.to_string(),
            message,
        };
        let bytes = match store.get(&m.key).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(fail("does not exist (expired, or never written)".into()))
            }
            Err(source) => {
                return Err(JobError::Store {
                    job_id: self.job_id.clone(),
                    source,
                })
            }
        };
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(fail(format!(
                "{} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may hold",
                bytes.len()
            )));
        }
        let sha = format!("{:x}", Sha256::digest(&bytes));
        if sha != m.sha256 {
            return Err(fail(format!(
                "SHA-256 {sha} differs from the message's {}",
                m.sha256
            )));
        }
        let manifest: JobManifest =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a job manifest: {e}")))?;
        if manifest.job_id != self.job_id || manifest.study_uid != self.study_uid {
            return Err(fail(format!(
                "belongs to job {} of study {}",
                crate::logsafe::escape(&manifest.job_id),
                manifest.study_uid
            )));
        }
        if manifest.objects.len() as u64 != m.objects {
            return Err(fail(format!(
                "lists {} objects, the message says {}",
                manifest.objects.len(),
                m.objects
            )));
        }
        self.objects = manifest.objects;
        self.check_objects()
    }

    /// Parse a job message (version 1 or 2), checking the version first so an old worker says
    /// why it cannot read a newer message instead of reporting a missing field. A version-2
    /// job's `objects` stay empty until [`Job::load_objects`].
    pub fn from_json(text: &str) -> Result<Self, JobError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u64,
        }
        let probe: Probe = serde_json::from_str(text)?;
        let job: Job = match probe.version {
            v if v == u64::from(INLINE_JOB_VERSION) || v == u64::from(JOB_VERSION) => {
                serde_json::from_str(text)?
            }
            found => return Err(JobError::UnsupportedVersion { found }),
        };
        let inconsistent = |message: String| JobError::Inconsistent {
            job_id: crate::logsafe::escape(&job.job_id),
            message,
        };
        match (&job.manifest, job.version) {
            (None, INLINE_JOB_VERSION) => {}
            (Some(m), JOB_VERSION) => {
                if !job.objects.is_empty() {
                    return Err(inconsistent(
                        "a version-2 message lists objects inline".into(),
                    ));
                }
                let prefix = format!("{}jobs/", ObjectKey::incoming_study_prefix(&job.study_uid));
                if !m.key.as_str().starts_with(&prefix) {
                    return Err(inconsistent(format!(
                        "its object list {} is not under {prefix}",
                        crate::logsafe::escape(m.key.as_str())
                    )));
                }
                if m.objects > MAX_JOB_OBJECTS {
                    return Err(inconsistent(format!(
                        "{} objects, more than the {MAX_JOB_OBJECTS} a job may list",
                        m.objects
                    )));
                }
                return Ok(job);
            }
            (_, v) => {
                return Err(inconsistent(format!(
                    "a version-{v} message must {} an object list manifest",
                    if v == INLINE_JOB_VERSION {
                        "not name"
                    } else {
                        "name"
                    }
                )))
            }
        }
        job.check_objects()?;
        Ok(job)
    }

    /// Every object is one of this study's staged instances.
    fn check_objects(&self) -> Result<(), JobError> {
        let job = self;
        let prefix = ObjectKey::incoming_study_prefix(&job.study_uid);
        if let Some(o) = job
            .objects
            .iter()
            .find(|o| !o.key.as_str().starts_with(&prefix))
        {
            return Err(JobError::ForeignObject {
                job_id: job.job_id.clone(),
                key: o.key.to_string(),
                study: job.study_uid.to_string(),
            });
        }
        Ok(())
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
        let newer = job.to_json().replace("\"version\":1", "\"version\":3");
        assert!(matches!(
            Job::from_json(&newer),
            Err(JobError::UnsupportedVersion { found: 3 })
        ));
        let half = job.to_json().replace("\"version\":1", "\"version\":2");
        assert!(
            matches!(Job::from_json(&half), Err(JobError::Inconsistent { .. })),
            "version 2 without a manifest"
        );
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
