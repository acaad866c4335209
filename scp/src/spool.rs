//! The durable spool: every acknowledged instance is a file here until its study has been
//! staged to the store and its job enqueued. Layout under the spool folder:
//!
//! ```text
//! .journal/<id>.seg                 acknowledged instances not yet in their study folder
//!                                   (see `journal`)
//! .incoming/<uuid>.part             a large instance being received (not yet acknowledged)
//! .incoming/replace-<sop>.part      a correction being written before it replaces <sop>.dcm
//! <study>/<series>/<sop>.dcm        acknowledged, waiting for the study's quiet period
//! .emitting/<ms>-<study>/...        a study being staged and enqueued (same layout inside,
//!                                   plus job.json once the job is fixed)
//! .lock                             held (exclusive file lock) by the one listener using it
//! .provenance/<ms>-<study>.jsonl    who sent the instances of an emitted study, and their
//!                                   digests, for the 24 h after its job (see `provenance`)
//! ```
//!
//! Every instance file carries its provenance stamp (caller, data set digest, reception order)
//! in its File Meta Information; see `provenance`.
//!
//! One listener per spool: two processes replaying one journal would emit its studies twice and
//! delete each other's partial receptions. [`Spool::open`] takes an exclusive lock on `.lock`
//! first and fails if another process holds it; the operating system releases it when the
//! process ends, however it ends (on EFS/NFS too: NFSv4 locks).
//!
//! Only `.part` files are ever deleted without having been staged: they were never
//! acknowledged, or (`replace-*`) their content is still in the journal. Everything else
//! survives restarts until its job is on the queue.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use staging::{fsync_dir, Uid};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

const INCOMING: &str = ".incoming";
const EMITTING: &str = ".emitting";
pub const JOB_FILE: &str = "job.json";

#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// Held open, locked, for as long as the spool is in use.
    _lock: fs::File,
    /// The folder lock within this process: held for reading while an instance is moved into a
    /// study folder ([`Spool::commit`], [`Spool::materialize`]), for writing while a study folder
    /// is frozen for emission ([`Spool::begin_emit`]): no instance lands in a folder being moved.
    folders: Arc<RwLock<()>>,
}

const LOCK_FILE: &str = ".lock";

/// One spooled instance of a study being emitted.
#[derive(Debug, Clone)]
pub struct SpooledInstance {
    pub series: Uid,
    pub sop: Uid,
    pub path: PathBuf,
}

impl Spool {
    /// Open (creating) the spool, lock it for this process, and discard partial receptions from a
    /// previous run. Fails with `WouldBlock` if another process has the spool open.
    pub fn open(root: &Path) -> io::Result<(Spool, usize)> {
        fs::create_dir_all(root.join(INCOMING))?;
        fs::create_dir_all(root.join(EMITTING))?;
        let root = root.canonicalize()?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another segnode listener is using this spool (its .lock is held); \
                     run one listener per data folder",
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        fsync_dir(&root)?;
        let mut discarded = 0;
        for entry in fs::read_dir(root.join(INCOMING))? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
            discarded += 1;
        }
        Ok((
            Spool {
                root,
                _lock: lock,
                folders: Arc::new(RwLock::new(())),
            },
            discarded,
        ))
    }

    /// The folder lock for moving instances into study folders, from a plain (non-async) thread.
    pub fn blocking_read_folders(&self) -> RwLockReadGuard<'_, ()> {
        self.folders.blocking_read()
    }

    /// The folder lock for freezing a study folder.
    pub async fn write_folders(&self) -> RwLockWriteGuard<'_, ()> {
        self.folders.write().await
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn new_part_path(&self) -> PathBuf {
        self.root
            .join(INCOMING)
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()))
    }

    /// Move a complete, fsynced `.part` file to its place and make the move durable.
    /// The caller holds the folder lock for reading ([`Spool::blocking_read_folders`]).
    pub fn commit(&self, part: &Path, study: &Uid, series: &Uid, sop: &Uid) -> io::Result<PathBuf> {
        let study_dir = self.root.join(study.as_str());
        let series_dir = study_dir.join(series.as_str());
        if !series_dir.is_dir() {
            let new_study = !study_dir.is_dir();
            fs::create_dir_all(&series_dir)?;
            if new_study {
                fsync_dir(&self.root)?;
            }
            fsync_dir(&study_dir)?;
        }
        let target = instance_file(&series_dir, sop);
        fs::rename(part, &target)?;
        fsync_dir(&series_dir)?;
        Ok(target)
    }

    /// Write a journalled instance to its place, without syncing: the journal keeps it until
    /// the materializer has synced the file system. A copy already there is replaced only by a
    /// later reception (the provenance stamp's sequence number): a correction the listener
    /// accepted (see `provenance`) may reach the folder before the copy it replaced, when
    /// they came through different journal segments (replayed in segment order after a crash)
    /// or the correction took the file path.
    /// The caller holds the folder lock for reading ([`Spool::blocking_read_folders`]).
    ///
    /// The record's stamp is completed here (its data set's digest computed: the
    /// acknowledgement path leaves it to this thread) and returned, for the registry.
    pub fn materialize(
        &self,
        study: &Uid,
        series: &Uid,
        sop: &Uid,
        payload: &[u8],
    ) -> io::Result<Option<crate::provenance::Stamp>> {
        let series_dir = self.root.join(study.as_str()).join(series.as_str());
        fs::create_dir_all(&series_dir)?;
        let target = instance_file(&series_dir, sop);
        let Some((header, start, stamp)) = crate::provenance::complete(payload) else {
            fs::write(target, payload)?;
            return Ok(None);
        };
        // A correction replaces the staged copy whole: written beside it and renamed over it, so
        // whoever reads the folder sees the old copy or the new one, never a truncated file. (A
        // crash in between leaves a `.part`, removed at the next start; the journal still holds
        // the record until this batch is synced.) A first copy is written in place.
        let replacing = target.exists();
        if replacing {
            let there = crate::provenance::read_stamp_file(&target).map(|s| s.seq);
            if there.is_some_and(|there| there > stamp.seq) {
                return Ok(Some(stamp));
            }
        }
        let written = if replacing {
            self.root.join(INCOMING).join(format!("replace-{sop}.part"))
        } else {
            target.clone()
        };
        let mut f = fs::File::create(&written)?;
        f.write_all(&header)?;
        f.write_all(&payload[start..])?;
        drop(f);
        if replacing {
            fs::rename(&written, &target)?;
        }
        Ok(Some(stamp))
    }

    /// Studies with acknowledged instances waiting for their quiet period.
    pub fn pending_studies(&self) -> io::Result<Vec<Uid>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && !name.starts_with('.') {
                if let Ok(uid) = Uid::new(&name) {
                    out.push(uid);
                }
            }
        }
        Ok(out)
    }

    /// Freeze a study's instances for emission: later instances start a new study folder.
    /// The caller holds the folder lock for writing ([`Spool::write_folders`]). None if the study has no folder.
    pub fn begin_emit(&self, study: &Uid) -> io::Result<Option<PathBuf>> {
        let from = self.root.join(study.as_str());
        if !from.is_dir() {
            return Ok(None);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let to = self.root.join(EMITTING).join(format!("{now}-{study}"));
        fs::rename(&from, &to)?;
        fsync_dir(&self.root)?;
        fsync_dir(&self.root.join(EMITTING))?;
        Ok(Some(to))
    }

    /// Emissions left unfinished (by a crash or a failed stage/enqueue), oldest first.
    pub fn emitting(&self) -> io::Result<Vec<(PathBuf, Uid)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(EMITTING))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((_, study)) = name.split_once('-') {
                if let Ok(uid) = Uid::new(study) {
                    out.push((entry.path(), uid));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The instances inside a study folder (pending or emitting).
    pub fn instances_in(dir: &Path) -> io::Result<Vec<SpooledInstance>> {
        let mut out = Vec::new();
        for series_entry in fs::read_dir(dir)? {
            let series_entry = series_entry?;
            if !series_entry.file_type()?.is_dir() {
                continue;
            }
            let Ok(series) = Uid::new(&series_entry.file_name().to_string_lossy()) else {
                continue;
            };
            for f in fs::read_dir(series_entry.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(sop) = name
                    .strip_suffix(INSTANCE_SUFFIX)
                    .and_then(|s| Uid::new(s).ok())
                else {
                    continue;
                };
                out.push(SpooledInstance {
                    series: series.clone(),
                    sop,
                    path: f.path(),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The study's job is on the queue: its spooled copies can go.
    pub fn finish_emit(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)?;
        fsync_dir(&self.root.join(EMITTING))
    }
}

/// An acknowledged instance is kept as `<series folder>/<SOP Instance UID>.dcm`.
const INSTANCE_SUFFIX: &str = ".dcm";

fn instance_file(series_dir: &Path, sop: &Uid) -> PathBuf {
    series_dir.join(format!("{sop}{INSTANCE_SUFFIX}"))
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn one_open_spool_per_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Spool::open(dir.path()).unwrap();
        let err = Spool::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(err.to_string().contains("one listener per data folder"));
        drop(first);
        Spool::open(dir.path()).expect("the lock goes with the spool that held it");
    }
}
