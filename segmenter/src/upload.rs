//! The S3-upload entry path: studies dropped into the bucket instead of sent by C-STORE.
//!
//! Someone uploads `uploads/<anything>.zip` (the DICOM files of one study), or the files of a
//! folder `uploads/<name>/...` followed by an empty `uploads/<name>/COMPLETE`. The bucket's event
//! notification puts an S3 event message on the job queue. A worker reads it here
//! ([`staging::message::parse_message`]), expands the upload into an ordinary job ([`expand`]): every DICOM file is
//! parsed, its UIDs validated, and it is staged under `incoming/<study>/<series>/<sop>.dcm`
//! exactly as the SCP stages what it receives; the job id is derived from the staged keys, so a
//! redelivered event yields the same job id and therefore the same SEG SOP Instance UID.
//!
//! No name from an upload becomes a filesystem path: archive entry names only appear in
//! messages, the temporary files an upload is expanded into are named by index, and keys are
//! built from validated UIDs. Zip bombs are bounded by
//! [`UploadLimits`] (total uncompressed bytes and file count), checked against the sizes the
//! archive declares and again while inflating.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use dimse::part10::IdentifyError;
use staging::{Job, JobObject, ObjectKey, ObjectStore, StoreError, Uid, UploadKey};
use tracing::{info, warn};

use crate::error::SegmentError;

// The queue-message contract (jobs and S3 event notifications) is staging's; re-exported here,
// where the worker's upload path has always found it.
pub use staging::message::{
    decode_s3_key, parse_message, KeyDecodeError, Message, MessageError, S3Object,
};

/// Bounds on what one upload may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Total bytes of the upload: the zip object itself, and the sum of its uncompressed entries
    /// (or of the folder's files).
    pub max_bytes: u64,
    /// Files in one upload (zip entries or folder objects, directories and skipped names excluded).
    pub max_files: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_bytes: 1024 * 1024 * 1024,
            max_files: 10_000,
        }
    }
}

fn upload_error(key: &ObjectKey, message: impl Into<String>) -> SegmentError {
    SegmentError::Upload {
        key: key.to_string(),
        message: message.into(),
    }
}

async fn get_to_file(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    path: &Path,
    max_bytes: u64,
) -> Result<u64, SegmentError> {
    match store.get_to_file(key, path, max_bytes).await {
        Ok(n) => Ok(n),
        // Gone after its event was sent (deleted, expired): no retry brings it back.
        Err(StoreError::NotFound(_)) => Err(upload_error(key, "no longer in the store")),
        Err(e) => Err(SegmentError::Store {
            key: key.as_str().to_string(),
            source: e,
        }),
    }
}

/// Names in an upload that are not part of the study and are skipped: hidden files
/// (`.DS_Store`), macOS resource forks (`__MACOSX/`), DICOMDIR (a media directory, not an image),
/// and the folder's own COMPLETE marker.
fn is_skipped(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.is_empty()
        || base.starts_with('.')
        || name.split('/').any(|s| s == "__MACOSX")
        || base.eq_ignore_ascii_case("DICOMDIR")
}

/// Expands the upload at `key` (`uploads/....zip` or `uploads/<name>/COMPLETE`) into a job:
/// every file staged under `incoming/`, one study, a deterministic job id.
///
/// Memory does not follow the upload's size: the zip is streamed from the store into a
/// temporary folder, each entry (or folder object) is inflated or copied into its own file
/// there, and the files are identified one at a time (one file in memory at once) and staged
/// from disk. The temporary folder (`TMPDIR`, else /tmp) needs room for the zip and its files:
/// twice `max_bytes` at most; it is removed when this returns.
pub async fn expand(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    size_hint: Option<u64>,
    limits: &UploadLimits,
) -> Result<Job, SegmentError> {
    let fetched = fetch(store, key, size_hint, limits).await?;
    stage(store, key, fetched.files).await
}

/// An upload's files on disk (named by index) in a temporary folder removed when this is dropped.
pub struct Fetched {
    pub dir: tempfile::TempDir,
    /// (name in the upload, path on disk), skipped names (hidden files, `__MACOSX/`, DICOMDIR,
    /// the marker) left out.
    pub files: Vec<UploadedFile>,
}

/// The name of the case an upload stands for: `uploads/<dirs>/<case>.zip` or
/// `uploads/<dirs>/<case>/COMPLETE` give `<case>`; None for a key that is not an upload.
pub fn case_name(key: &ObjectKey) -> Option<String> {
    let base = match key.parse_upload()? {
        UploadKey::Zip => {
            let name = key.as_str().rsplit('/').next()?;
            name[..name.len() - ".zip".len()].to_string()
        }
        UploadKey::Folder { prefix } => prefix.trim_end_matches('/').rsplit('/').next()?.into(),
    };
    Some(base)
}

/// Downloads the upload at `key` (the zip, inflated entry by entry, or the folder's objects) into
/// a temporary folder, bounded by `limits`; the first half of [`expand`], also used for NIfTI
/// uploads (crate::nifti_case).
pub async fn fetch(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    size_hint: Option<u64>,
    limits: &UploadLimits,
) -> Result<Fetched, SegmentError> {
    let work = tempfile::Builder::new()
        .prefix("segnode-upload-")
        .tempdir()
        .map_err(|source| SegmentError::Io {
            what: "cannot create a temporary folder",
            source,
        })?;
    let files = match key.parse_upload() {
        Some(UploadKey::Zip) => {
            if let Some(size) = size_hint.filter(|&s| s > limits.max_bytes) {
                return Err(over_limit(key, size, limits));
            }
            let zip_path = work.path().join("upload.zip");
            let size = get_to_file(store, key, &zip_path, limits.max_bytes).await?;
            if size > limits.max_bytes {
                return Err(over_limit(key, size, limits));
            }
            let (k, l, dir) = (key.clone(), *limits, work.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                let zip = std::fs::File::open(&zip_path).map_err(|source| SegmentError::Io {
                    what: "cannot reopen the downloaded upload",
                    source,
                })?;
                unzip(zip, &k, &l, &dir)
            })
            .await
            .map_err(|source| SegmentError::Task {
                what: "unzip",
                source,
            })??
        }
        Some(UploadKey::Folder { prefix }) => {
            read_folder(store, key, &prefix, limits, work.path()).await?
        }
        None => {
            return Err(upload_error(
                key,
                "is not an upload (expected uploads/<name>.zip or uploads/<name>/COMPLETE)",
            ))
        }
    };
    Ok(Fetched { dir: work, files })
}

fn over_limit(key: &ObjectKey, size: u64, limits: &UploadLimits) -> SegmentError {
    upload_error(
        key,
        format!(
            "is {size} bytes, over the limit of {} bytes",
            limits.max_bytes
        ),
    )
}

/// One file of an upload, waiting on disk: its name in the upload (for messages) and where it is.
pub type UploadedFile = (String, PathBuf);

/// The files of an archive, each inflated into its own file under `dir`, bounded by `limits`
/// (declared sizes first, then actual bytes).
fn unzip<R: Read + std::io::Seek>(
    zip: R,
    key: &ObjectKey,
    limits: &UploadLimits,
    dir: &Path,
) -> Result<Vec<UploadedFile>, SegmentError> {
    let mut archive = zip::ZipArchive::new(zip)
        .map_err(|e| upload_error(key, format!("is not a readable zip archive: {e}")))?;
    if archive.len() > limits.max_files {
        return Err(upload_error(
            key,
            format!(
                "holds {} entries, over the limit of {}",
                archive.len(),
                limits.max_files
            ),
        ));
    }
    let too_big = |name: &str| {
        upload_error(
            key,
            format!(
                "expands to more than the limit of {} bytes (at entry {name:?})",
                limits.max_bytes
            ),
        )
    };
    let mut total: u64 = 0;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| upload_error(key, format!("entry {i} cannot be read: {e}")))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry {i}"));
        if entry.is_dir() || is_skipped(&name) {
            continue;
        }
        if entry.is_symlink() {
            return Err(upload_error(
                key,
                format!("entry {name:?} is a symbolic link"),
            ));
        }
        let room = limits.max_bytes - total;
        if entry.size() > room {
            return Err(too_big(&name));
        }
        // Entry names never become paths: the file is named by its index.
        let path = dir.join(format!("{i}.dcm"));
        let mut file = std::fs::File::create(&path).map_err(|source| SegmentError::Io {
            what: "cannot write a temporary file",
            source,
        })?;
        // The declared size may lie: never inflate more than the room left (plus one byte to notice).
        let n = std::io::copy(&mut (&mut entry).take(room + 1), &mut file)
            .map_err(|e| upload_error(key, format!("entry {name:?} cannot be inflated: {e}")))?;
        if n > room {
            return Err(too_big(&name));
        }
        total += n;
        out.push((name, path));
    }
    Ok(out)
}

/// The objects under an uploaded folder's prefix (the marker and skipped names excluded), each
/// copied into its own file under `dir`.
async fn read_folder(
    store: &dyn ObjectStore,
    marker: &ObjectKey,
    prefix: &str,
    limits: &UploadLimits,
    dir: &Path,
) -> Result<Vec<UploadedFile>, SegmentError> {
    let keys: Vec<ObjectKey> = store
        .list(prefix)
        .await
        .map_err(|source| SegmentError::Store {
            key: format!("listing {prefix}"),
            source,
        })?
        .into_iter()
        .filter(|k| k != marker && !is_skipped(k.as_str()))
        .collect();
    if keys.len() > limits.max_files {
        return Err(upload_error(
            marker,
            format!(
                "the folder holds {} files, over the limit of {}",
                keys.len(),
                limits.max_files
            ),
        ));
    }
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        let path = dir.join(format!("{i}.dcm"));
        total += get_to_file(store, &k, &path, limits.max_bytes - total).await?;
        if total > limits.max_bytes {
            return Err(upload_error(
                marker,
                format!(
                    "the folder holds more than the limit of {} bytes",
                    limits.max_bytes
                ),
            ));
        }
        let name = k.as_str()[prefix.len()..].to_string();
        out.push((name, path));
    }
    Ok(out)
}

/// Why one file of an upload cannot be staged: the study is unusable as uploaded (permanent).
#[derive(Debug, thiserror::Error)]
pub enum UploadFileError {
    /// The file, downloaded to a temporary folder, cannot be read back.
    #[error("{name:?} cannot be read back from disk: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a DICOM Part-10 file within the scan's limits.
    #[error("{name:?} is not a DICOM Part-10 file: {source}")]
    NotPart10 {
        name: String,
        #[source]
        source: IdentifyError,
    },
    /// A Part-10 file without a Study, Series or SOP Instance UID.
    #[error("{name:?} has no {what}")]
    Missing { name: String, what: &'static str },
    /// A UID that is not a valid DICOM UID (it would become a store key).
    #[error("{name:?}: {source}")]
    Invalid {
        name: String,
        #[source]
        source: IdentifyError,
    },
}

/// Study, series and SOP Instance UIDs of one file, validated (`dimse::part10`, the reading the
/// listener shares: bounded scan first); the error names the file.
fn identify(name: &str, bytes: &[u8]) -> Result<(Uid, Uid, Uid), UploadFileError> {
    let why = |e: IdentifyError| {
        let name = name.to_string();
        match e {
            IdentifyError::Scan(_) | IdentifyError::Parse(_) => {
                UploadFileError::NotPart10 { name, source: e }
            }
            IdentifyError::Missing(what) => UploadFileError::Missing { name, what },
            IdentifyError::Invalid { .. } => UploadFileError::Invalid { name, source: e },
        }
    };
    let id = dimse::part10::identify(bytes, &dimse::scan::Limits::default()).map_err(why)?;
    let sop = id.sop_instance_uid().map_err(why)?;
    Ok((id.study, id.series, sop))
}

/// Parses every file (one in memory at a time), checks that they are one study, stages them
/// under `incoming/` from disk and builds the job.
pub(crate) async fn stage(
    store: &dyn ObjectStore,
    upload: &ObjectKey,
    files: Vec<UploadedFile>,
) -> Result<Job, SegmentError> {
    let (identified, files) = tokio::task::spawn_blocking(move || {
        let ids = files
            .iter()
            .map(|(name, path)| {
                let bytes = std::fs::read(path).map_err(|source| UploadFileError::Read {
                    name: name.clone(),
                    source,
                })?;
                identify(name, &bytes)
            })
            .collect::<Result<Vec<_>, UploadFileError>>();
        (ids, files)
    })
    .await
    .map_err(|source| SegmentError::Task {
        what: "parse",
        source,
    })?;
    let identified = identified.map_err(|source| SegmentError::UploadFile {
        key: upload.to_string(),
        source: Box::new(source),
    })?;
    let studies: BTreeSet<&Uid> = identified.iter().map(|(st, _, _)| st).collect();
    let study = match studies.len() {
        0 => return Err(upload_error(upload, "holds no DICOM files")),
        1 => (*studies.iter().next().unwrap()).clone(),
        n => {
            let list: Vec<&str> = studies.iter().map(|u| u.as_str()).collect();
            return Err(upload_error(
                upload,
                format!(
                    "holds {n} studies ({}); upload one study per zip or folder",
                    list.join(", ")
                ),
            ));
        }
    };
    let mut objects: Vec<JobObject> = Vec::with_capacity(files.len());
    for ((name, path), (_, series, sop)) in files.into_iter().zip(identified) {
        let key = ObjectKey::incoming(&study, &series, &sop);
        if objects.iter().any(|o| o.key == key) {
            warn!(upload = %upload, file = %name, sop = %sop, "SOP Instance UID seen twice in the upload; the first copy is kept");
            continue;
        }
        store
            .put_file(&key, &path)
            .await
            .map_err(|source| SegmentError::Store {
                key: key.as_str().to_string(),
                source,
            })?;
        objects.push(JobObject {
            key,
            series_uid: series,
            sop_uid: sop,
        });
    }
    let received_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let job = Job::new(study, objects, None, received_at);
    info!(upload = %upload, job_id = %job.job_id, study = %job.study_uid, objects = job.objects.len(), "upload staged under incoming/");
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::Cursor;
    use std::io::Write;
    use std::sync::Arc;

    use staging::LocalStore;
    use zip::write::SimpleFileOptions;

    fn study_dir() -> std::path::PathBuf {
        testkit::workspace_root().join("testdata/studies/synth-007-axial-rle/dicom")
    }

    fn study_files() -> Vec<(String, Vec<u8>)> {
        testkit::named_files(&study_dir())
    }

    fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.add_directory("study/", opts).unwrap();
        for (name, data) in files {
            w.start_file(format!("study/{name}"), opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalStore::open(dir).unwrap())
    }

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    const STUDY_UID: &str = "2.25.293253754093074699753752768614597929384";

    #[tokio::test]
    async fn a_zip_expands_into_the_same_job_as_a_folder_and_again_on_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let files = study_files();
        let mut with_junk = files.clone();
        with_junk.push(("__MACOSX/._x".into(), b"junk".to_vec()));
        with_junk.push((".DS_Store".into(), b"junk".to_vec()));
        let zip_key = key("uploads/my study.zip");
        store
            .put(&zip_key, Bytes::from(zip_of(&with_junk)))
            .await
            .unwrap();
        let limits = UploadLimits::default();
        let job = expand(store.as_ref(), &zip_key, None, &limits)
            .await
            .unwrap();
        assert_eq!(job.study_uid.as_str(), STUDY_UID);
        assert_eq!(job.objects.len(), files.len());
        for o in &job.objects {
            assert!(o
                .key
                .as_str()
                .starts_with(&format!("incoming/{STUDY_UID}/")));
            let staged = store.get(&o.key).await.unwrap();
            assert!(files.iter().any(|(_, b)| b[..] == staged[..]));
        }
        // Redelivered event: same job id (hence the same SEG UID).
        let again = expand(store.as_ref(), &zip_key, None, &limits)
            .await
            .unwrap();
        assert_eq!(again.job_id, job.job_id);

        // The same study as a folder + COMPLETE marker gives the same job.
        for (name, data) in &files {
            store
                .put(
                    &key(&format!("uploads/site a/{name}")),
                    Bytes::from(data.clone()),
                )
                .await
                .unwrap();
        }
        let marker = key("uploads/site a/COMPLETE");
        store.put(&marker, Bytes::new()).await.unwrap();
        let folder = expand(store.as_ref(), &marker, None, &limits)
            .await
            .unwrap();
        assert_eq!(folder.job_id, job.job_id);
        assert_eq!(folder.objects, job.objects);
    }

    #[tokio::test]
    async fn bad_uploads_are_permanent_errors_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let files = study_files();
        let limits = UploadLimits::default();
        let check = |r: Result<Job, SegmentError>, says: &str| {
            let e = r.unwrap_err();
            assert!(e.is_permanent(), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        };

        let k = key("uploads/notes.zip");
        store
            .put(&k, Bytes::from_static(b"not a zip"))
            .await
            .unwrap();
        check(
            expand(store.as_ref(), &k, None, &limits).await,
            "not a readable zip",
        );

        let k = key("uploads/text.zip");
        let z = zip_of(&[("readme.txt".into(), b"hello".to_vec())]);
        store.put(&k, Bytes::from(z)).await.unwrap();
        check(
            expand(store.as_ref(), &k, None, &limits).await,
            "\"study/readme.txt\" is not a DICOM Part-10 file",
        );

        let k = key("uploads/empty.zip");
        store.put(&k, Bytes::from(zip_of(&[]))).await.unwrap();
        check(
            expand(store.as_ref(), &k, None, &limits).await,
            "holds no DICOM files",
        );

        // Two studies: the second one's Study Instance UID rewritten in place (same length).
        let mut two = files[..2].to_vec();
        let other = STUDY_UID.replace("2.25.2", "2.25.9");
        let pos = two[1]
            .1
            .windows(STUDY_UID.len())
            .position(|w| w == STUDY_UID.as_bytes())
            .unwrap();
        two[1].1[pos..pos + STUDY_UID.len()].copy_from_slice(other.as_bytes());
        let k = key("uploads/two.zip");
        store.put(&k, Bytes::from(zip_of(&two))).await.unwrap();
        check(
            expand(store.as_ref(), &k, None, &limits).await,
            "holds 2 studies",
        );

        check(
            expand(store.as_ref(), &key("uploads/gone.zip"), None, &limits).await,
            "no longer in the store",
        );
        check(
            expand(store.as_ref(), &key("uploads/a/b.dcm"), None, &limits).await,
            "is not an upload",
        );
    }

    #[tokio::test]
    async fn zip_bombs_and_oversized_uploads_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // 64 MiB of zeros deflate to ~64 KiB.
        let bomb = zip_of(&[("zeros.dcm".into(), vec![0u8; 64 << 20])]);
        assert!(bomb.len() < 1 << 20);
        let k = key("uploads/bomb.zip");
        store.put(&k, Bytes::from(bomb)).await.unwrap();
        let limits = UploadLimits {
            max_bytes: 8 << 20,
            max_files: 100,
        };
        let e = expand(store.as_ref(), &k, None, &limits).await.unwrap_err();
        assert!(
            e.is_permanent() && e.to_string().contains("expands to more than"),
            "{e}"
        );
        // The event's size is checked before anything is fetched.
        let e = expand(store.as_ref(), &k, Some(9 << 20), &limits)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");

        let many: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("{i}.dcm"), vec![1])).collect();
        let k = key("uploads/many.zip");
        store.put(&k, Bytes::from(zip_of(&many))).await.unwrap();
        let limits = UploadLimits {
            max_bytes: 1 << 20,
            max_files: 4,
        };
        let e = expand(store.as_ref(), &k, None, &limits).await.unwrap_err();
        assert!(
            e.to_string().contains("entries, over the limit of 4"),
            "{e}"
        );
    }

    #[test]
    fn a_lying_declared_size_is_caught_while_inflating() {
        // An entry whose header claims 10 bytes but inflates to 1 MiB.
        let data = vec![7u8; 1 << 20];
        let mut zip = zip_of(&[("x.dcm".into(), data)]);
        // Patch the uncompressed size in the central directory and the local header to 10.
        let patch = |zip: &mut Vec<u8>, sig: &[u8], offset: usize| {
            let mut i = 0;
            while let Some(p) = zip[i..].windows(4).position(|w| w == sig) {
                let at = i + p + offset;
                if zip[at..at + 4] == (1u32 << 20).to_le_bytes() {
                    zip[at..at + 4].copy_from_slice(&10u32.to_le_bytes());
                }
                i += p + 4;
            }
        };
        patch(&mut zip, b"PK\x01\x02", 24);
        patch(&mut zip, b"PK\x03\x04", 22);
        let limits = UploadLimits {
            max_bytes: 1000,
            max_files: 10,
        };
        let dir = tempfile::tempdir().unwrap();
        let e = unzip(
            std::io::Cursor::new(zip),
            &key("uploads/liar.zip"),
            &limits,
            dir.path(),
        )
        .unwrap_err();
        assert!(e.is_permanent(), "{e}");
    }
}
