//! `ObjectStore`: where staged instances and results live. A local folder (the embedded
//! default, and what an FSx for Lustre mount looks like) or an S3 bucket.

use std::collections::HashSet;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::keys::ObjectKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} does not exist")]
    NotFound(ObjectKey),
    #[error("local store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("S3 {op} of {key} in bucket {bucket} failed: {message}")]
    Remote {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
}

impl StoreError {
    /// True when the failure means the disk is full or over quota, which the SCP reports
    /// as 0xA700 "out of resources" rather than a processing failure.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if is_out_of_space(source))
    }
}

pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_enospc) if libc_enospc == 28 /* ENOSPC */ || libc_enospc == 122 /* EDQUOT */)
}

#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Store `data` under `key`, replacing any previous object, atomically.
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<(), StoreError>;
    /// Store the contents of a local file under `key` (cheaper than `put` for big files).
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), StoreError>;
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError>;
    /// Copy object `key` into the new local file `path`, streaming (the object is never whole
    /// in memory), writing at most `max_bytes + 1` bytes: the size returned is then over
    /// `max_bytes` and the caller refuses the object. Returns the bytes written.
    async fn get_to_file(
        &self,
        key: &ObjectKey,
        path: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError>;
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// All keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError>;
    /// Delete `key`; deleting a missing key is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;
    /// Human-readable location for logs, e.g. `file:///var/lib/segnode/store` or `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// The key in this store of object `key` of S3 bucket `bucket` (as an S3 event notification
    /// names it, already URL-decoded), or None when this store does not hold that bucket's object.
    /// A local folder is taken to be a mount of the bucket (FSx for Lustre linked to it): same keys.
    fn key_of_bucket_object(&self, _bucket: &str, key: &str) -> Option<ObjectKey> {
        ObjectKey::new(key).ok()
    }
}

/// A store in a local folder. Every write goes to a temporary file in the target folder, is
/// fsynced, renamed over the target and the folder fsynced: a crash leaves the old object or
/// the new one, never half of one.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    durable_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

impl LocalStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(LocalStore {
            root,
            durable_dirs: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (it may not exist).
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn io<T>(path: &Path, r: io::Result<T>) -> Result<T, StoreError> {
        r.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Create `dir` and fsync every ancestor up to the root whose entry may be new.
    ///
    /// Folders made durable once are remembered, but a remembered folder that is gone (an
    /// operator or a clean-up job deleted it, or the whole store folder) is made again:
    /// without the check every later write under it failed for the life of the process.
    /// One `stat` per write, against the fsyncs it already costs.
    fn ensure_durable_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if self.durable_dirs.lock().unwrap().contains(dir) {
            if dir.is_dir() {
                return Ok(());
            }
            tracing::warn!(folder = %dir.display(), "a store folder was deleted under the node; making it again");
            self.durable_dirs.lock().unwrap().retain(|d| d.is_dir());
        }
        Self::io(dir, fs::create_dir_all(dir))?;
        let mut d = dir.to_path_buf();
        while d.starts_with(&self.root) && d != self.root {
            let parent = d.parent().expect("below root").to_path_buf();
            Self::io(&parent, fsync_dir(&parent))?;
            d = parent;
        }
        self.durable_dirs.lock().unwrap().insert(dir.to_path_buf());
        Ok(())
    }

    fn put_blocking(
        &self,
        key: &ObjectKey,
        fill: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let target = self.path_of(key);
        let dir = target
            .parent()
            .expect("a key has a parent folder")
            .to_path_buf();
        self.ensure_durable_dir(&dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file_name(&target),
            uuid::Uuid::new_v4().simple()
        ));
        let result = fill(&tmp)
            .and_then(|()| fs::rename(&tmp, &target))
            .and_then(|()| fsync_dir(&dir));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Self::io(&target, result)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// fsync a directory so that entries created or renamed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to a new file at `path` and fsync it.
pub fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("local store task panicked")
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<(), StoreError> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.put_blocking(&key, |tmp| write_synced(tmp, &data))).await
    }

    async fn put_file(&self, key: &ObjectKey, src: &Path) -> Result<(), StoreError> {
        let (this, key, src) = (self.clone(), key.clone(), src.to_path_buf());
        blocking(move || {
            this.put_blocking(&key, |tmp| {
                // Spool files are immutable once written (they are replaced by rename, never
                // rewritten), so a hard link is a safe zero-copy stage; fall back to a copy
                // across filesystems.
                match fs::hard_link(&src, tmp) {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        fs::copy(&src, tmp)?;
                        File::open(tmp)?.sync_all()
                    }
                }
            })
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let path = self.path_of(key);
        match tokio::fs::read(&path).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(key.clone())),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    async fn get_to_file(
        &self,
        key: &ObjectKey,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let (src, dest, key) = (self.path_of(key), dest.to_path_buf(), key.clone());
        blocking(move || {
            let from = match File::open(&src) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(key))
                }
                Err(source) => return Err(StoreError::Io { path: src, source }),
            };
            let mut to = Self::io(&dest, File::create(&dest))?;
            Self::io(
                &src,
                io::copy(
                    &mut io::Read::take(from, max_bytes.saturating_add(1)),
                    &mut to,
                ),
            )
        })
        .await
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let path = self.path_of(key);
        Self::io(&path, tokio::fs::try_exists(&path).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the deepest folder the prefix names fully.
            let start_rel = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let start = root.join(start_rel);
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(StoreError::Io { path: dir, source }),
                };
                for entry in entries {
                    let entry = Self::io(&dir, entry)?;
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with('.') {
                        continue; // temporary files of in-progress writes
                    }
                    let path = entry.path();
                    let ft = Self::io(&path, entry.file_type())?;
                    if ft.is_dir() {
                        stack.push(path);
                    } else if let Ok(rel) = path.strip_prefix(&root) {
                        let rel = rel.to_string_lossy().replace('\\', "/");
                        if rel.starts_with(&prefix) {
                            if let Ok(k) = ObjectKey::new(rel) {
                                out.push(k);
                            }
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
