//! The ingest journal: how an instance becomes durable before its success status without
//! creating, fsyncing and renaming a file (and fsyncing a folder) per instance.
//!
//! Each association appends its instances to a journal segment (`spool/.journal/<id>.seg`) and
//! makes each append durable before answering: one `O_DIRECT | O_DSYNC` write of the whole
//! record, 4 KiB-aligned (no page-cache copy, one wait for the device instead of the
//! writeback, inode and flush waits of `pwrite` + `fdatasync`), or, on a file system that
//! refuses direct I/O (tmpfs), a `pwrite` and one `fdatasync`. A background thread, the
//! materializer, then writes the instances into the spool's study folders
//! (`<study>/<series>/<sop>.dcm`, exactly where the file path puts them), makes them durable
//! together with one `syncfs`, and only then moves the segment's checkpoint past them. A
//! segment whose association has moved on and whose records are all checkpointed is recycled:
//! its generation number goes up, which invalidates its old records, and the next association
//! overwrites it in place (an overwrite of written blocks needs no metadata in its fdatasync).
//!
//! Crash safety: on start, every record past its segment's checkpoint that is whole (magic,
//! generation and CRC-32 all match) is materialized again before anything else runs; the first
//! record that is not whole ends the segment (a torn append was never acknowledged). The study
//! emitter asks for a [`Journal::barrier`] before it freezes a study folder, so an emitted
//! study holds every instance acknowledged before its quiet period ended.
//!
//! ```text
//! segment:  [header slot A @0][header slot B @512] ... [record][record]... from DATA_START
//! header:   magic u64 | counter u64 | generation u64 | checkpoint u64 | crc32 u32
//!           (two slots written alternately; the valid one with the higher counter wins)
//! record:   magic u32 | generation u64 | payload len u32 | study, series, sop len u8 x3 | 0u8
//!           | crc32 u32 (of everything after it) | study | series | sop | payload (Part 10 file)
//!           | zeros up to the next multiple of 4096 (the next record's offset)
//! ```
//!
//! The magic `SGNJSEG2` says records start at multiples of 4096. Segments that an earlier
//! version left with `SGNJSEG1` (records back to back) are still replayed at start; their
//! header is then rewritten as `SGNJSEG2`.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use staging::{fsync_dir, Uid};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::spool::Spool;

pub const JOURNAL_DIR: &str = ".journal";
/// Records at multiples of [`RECORD_ALIGN`].
const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"SGNJSEG2");
/// An earlier version's segments: records back to back (replayed, never written).
const SEGMENT_MAGIC_PACKED: u64 = u64::from_le_bytes(*b"SGNJSEG1");
/// Where records start: the direct-I/O alignment of any block device up to 4 KiB sectors.
const RECORD_ALIGN: u64 = 4096;
/// A writer keeps its scratch buffer between appends up to this size (an MR or CT instance).
const SCRATCH_KEPT: usize = 1024 * 1024;
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SGNR");
const HEADER_SLOTS: [u64; 2] = [0, 512];
const HEADER_LEN: usize = 36;
pub const DATA_START: u64 = 4096;
const RECORD_HEADER_LEN: usize = 24;
/// The materializer syncs and checkpoints at least every this many records or bytes while
/// records keep coming, and otherwise once they pause for `LAZY_PAUSE`.
const MAX_BATCH: usize = 1024;
const LAZY_BATCH_BYTES: u64 = 64 * 1024 * 1024;
const LAZY_PAUSE: Duration = Duration::from_millis(25);

/// One segment file; shared by the association writing it and the materializer.
#[derive(Debug)]
struct SegmentFile {
    id: u64,
    file: File,
    /// The same file opened `O_DIRECT | O_DSYNC` for the appends, where the file system
    /// allows it; `None` (or after a refused write, `direct_refused`) uses `file` + fdatasync.
    direct: Option<File>,
    direct_refused: AtomicBool,
    /// Counter of the last header write (only the creator, then the materializer, write it).
    header_counter: AtomicU64,
}

/// `path` opened for durable direct writes, if its file system takes them.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC;
        OpenOptions::new()
            .write(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

fn align_up(at: u64, align: u64) -> u64 {
    at.div_ceil(align) * align
}

impl SegmentFile {
    fn new(id: u64, path: &Path, file: File) -> SegmentFile {
        SegmentFile {
            id,
            file,
            direct: open_direct(path),
            direct_refused: AtomicBool::new(false),
            header_counter: AtomicU64::new(0),
        }
    }

    fn write_header(&self, generation: u64, checkpoint: u64) -> io::Result<()> {
        let counter = self.header_counter.fetch_add(1, Relaxed) + 1;
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        h.extend_from_slice(&counter.to_le_bytes());
        h.extend_from_slice(&generation.to_le_bytes());
        h.extend_from_slice(&checkpoint.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&h, HEADER_SLOTS[(counter % 2) as usize])?;
        self.file.sync_data()
    }

    /// (counter, generation, checkpoint, record alignment) of the newest whole header slot.
    fn read_header(&self) -> Option<(u64, u64, u64, u64)> {
        HEADER_SLOTS
            .iter()
            .filter_map(|&at| {
                let mut h = [0u8; HEADER_LEN];
                self.file.read_exact_at(&mut h, at).ok()?;
                let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().unwrap());
                let crc = u32::from_le_bytes(h[32..36].try_into().unwrap());
                let align = match word(0) {
                    SEGMENT_MAGIC => RECORD_ALIGN,
                    SEGMENT_MAGIC_PACKED => 1,
                    _ => return None,
                };
                (crc32fast::hash(&h[..32]) == crc).then(|| (word(1), word(2), word(3), align))
            })
            .max_by_key(|(counter, _, _, _)| *counter)
    }
}

/// An instance recorded in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInstance {
    pub study: Uid,
    pub series: Uid,
    pub sop: Uid,
}

enum Msg {
    Record {
        segment: Arc<SegmentFile>,
        generation: u64,
        end: u64,
        instance: RecordedInstance,
        /// The Part-10 bytes, handed over in memory; re-read from the segment when `None`.
        bytes: Option<Vec<u8>>,
        offset: u64,
    },
    /// The association left this segment; it may be recycled once checkpointed up to `tail`.
    Sealed {
        segment: Arc<SegmentFile>,
        generation: u64,
        tail: u64,
    },
    /// Answered with the studies that have acknowledged instances the materializer cannot
    /// write yet (see [`Journal::barrier`]).
    Barrier(oneshot::Sender<BTreeSet<Uid>>),
}

#[derive(Debug)]
struct FreeSegment {
    segment: Arc<SegmentFile>,
    generation: u64,
}

/// The journal of one spool. Cheap to share; writers are per association.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    capacity: u64,
    free: Mutex<Vec<FreeSegment>>,
    next_id: AtomicU64,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// Bytes acknowledged but not yet materialized, for the metrics and the memory bound.
    pending_bytes: Arc<AtomicU64>,
    /// Acknowledged instances the materializer cannot write into their study folder yet.
    stuck_instances: Arc<AtomicU64>,
    materializer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Told each materialized instance's digest (the acknowledgement path leaves it to us).
    registry: std::sync::OnceLock<Arc<crate::provenance::Registry>>,
}

/// What opening the journal found and redid.
#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub instances: usize,
}

/// Instances held in memory for the materializer beyond this are re-read from their segment.
const MAX_PENDING_IN_MEMORY: u64 = 128 * 1024 * 1024;

impl Journal {
    /// Open the journal under `spool`, materialize every acknowledged record a previous run
    /// left behind, and start the materializer. `capacity` is the size at which a segment is
    /// left for the next one.
    pub fn open(spool: Arc<Spool>, capacity: u64) -> io::Result<(Arc<Journal>, Recovery)> {
        Self::open_inner(spool, capacity, true)
    }

    /// `materialize: false` leaves records in the journal only, as a crash right after their
    /// acknowledgement would (tests).
    fn open_inner(
        spool: Arc<Spool>,
        capacity: u64,
        materialize: bool,
    ) -> io::Result<(Arc<Journal>, Recovery)> {
        let dir = spool.root().join(JOURNAL_DIR);
        fs::create_dir_all(&dir)?;
        fsync_dir(spool.root())?;
        let mut recovery = Recovery::default();
        let mut found = Vec::new();
        let mut max_id = 0;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            max_id = max_id.max(id);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            found.push(SegmentFile::new(id, &path, file));
        }
        found.sort_by_key(|s| s.id);
        let mut free = Vec::new();
        for segment in found {
            let (counter, generation, checkpoint, align) =
                segment.read_header().unwrap_or((0, 0, 0, RECORD_ALIGN));
            segment.header_counter.store(counter, Relaxed);
            if generation > 0 {
                let from = checkpoint.max(DATA_START);
                for record in scan(&segment.file, generation, from, align) {
                    let (instance, payload) = record?;
                    spool.materialize(
                        &instance.study,
                        &instance.series,
                        &instance.sop,
                        &payload,
                    )?;
                    recovery.instances += 1;
                }
            }
            recovery.segments += 1;
            free.push((segment, generation));
        }
        if recovery.instances > 0 {
            sync_filesystem(spool.root())?;
        }
        let free = free
            .into_iter()
            .map(|(segment, generation)| {
                let generation = generation + 1;
                segment.write_header(generation, DATA_START)?;
                Ok(FreeSegment {
                    segment: Arc::new(segment),
                    generation,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel();
        let pending_bytes = Arc::new(AtomicU64::new(0));
        let journal = Arc::new(Journal {
            dir,
            capacity: capacity.max(DATA_START * 2),
            free: Mutex::new(free),
            next_id: AtomicU64::new(max_id + 1),
            tx: Mutex::new(Some(tx)),
            pending_bytes: pending_bytes.clone(),
            stuck_instances: Arc::new(AtomicU64::new(0)),
            materializer: Mutex::new(None),
            registry: std::sync::OnceLock::new(),
        });
        if !materialize {
            drop(rx);
            return Ok((journal, recovery));
        }
        let weak = Arc::downgrade(&journal);
        let stuck_instances = journal.stuck_instances.clone();
        let handle = std::thread::Builder::new()
            .name("journal-materializer".into())
            .spawn(move || {
                Materializer {
                    spool,
                    journal: weak,
                    pending_bytes,
                    segments: HashMap::new(),
                    dirty: Default::default(),
                    stuck: Vec::new(),
                    stuck_instances,
                }
                .run(rx)
            })?;
        *journal.materializer.lock().unwrap() = Some(handle);
        Ok((journal, recovery))
    }

    /// The registry to tell the digests the materializer computes (set once, after the
    /// replay at start: the registry is rebuilt from the folders the replay wrote).
    pub fn set_registry(&self, registry: Arc<crate::provenance::Registry>) {
        let _ = self.registry.set(registry);
    }

    /// Ask the materializer to write what is pending now instead of waiting for the stream to
    /// pause (a re-sent instance waits for its staged copy's digest).
    pub fn nudge(&self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.send(Msg::Barrier(tx));
    }

    /// The largest Part-10 file a record can hold (larger instances take the file path).
    pub fn max_payload(&self) -> u64 {
        self.capacity
            .saturating_sub(DATA_START + RECORD_HEADER_LEN as u64 + 3 * 64 + RECORD_ALIGN)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Relaxed)
    }

    /// The live counter behind [`Journal::pending_bytes`], for the metrics.
    pub fn pending_bytes_counter(&self) -> Arc<AtomicU64> {
        self.pending_bytes.clone()
    }

    /// The live count of acknowledged instances that cannot be written into their study
    /// folder yet (they stay in the journal, retried), for the metrics.
    pub fn stuck_instances_counter(&self) -> Arc<AtomicU64> {
        self.stuck_instances.clone()
    }

    /// A writer for one association.
    pub fn writer(self: &Arc<Self>) -> JournalWriter {
        JournalWriter {
            journal: self.clone(),
            active: None,
            scratch: Vec::new(),
        }
    }

    /// Resolves once every instance acknowledged before the call is materialized and durable
    /// in the spool's study folders, except those of the studies it returns: instances the
    /// materializer cannot write (one study's folder is unwritable, say) stay in the journal,
    /// retried every second, without holding back every other study. The caller must not
    /// freeze a returned study. Waits while the file system cannot be synced at all: callers
    /// bound the wait.
    pub async fn barrier(&self) -> io::Result<BTreeSet<Uid>> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Barrier(tx))?;
        rx.await
            .map_err(|_| io::Error::other("the journal materializer stopped"))
    }

    /// Materialize what is pending and stop the materializer (records left are redone at
    /// the next start anyway).
    pub fn shutdown(&self) {
        self.tx.lock().unwrap().take();
        if let Some(h) = self.materializer.lock().unwrap().take() {
            let _ = h.join();
        }
    }

    fn send(&self, msg: Msg) -> io::Result<()> {
        let wake = matches!(msg, Msg::Barrier(_));
        {
            let tx = self.tx.lock().unwrap();
            tx.as_ref()
                .ok_or_else(|| io::Error::other("the journal is shut down"))?
                .send(msg)
                .map_err(|_| io::Error::other("the journal materializer stopped"))?;
        }
        if wake {
            // it may be napping with a batch (see `Materializer::run`)
            if let Some(h) = self.materializer.lock().unwrap().as_ref() {
                h.thread().unpark();
            }
        }
        Ok(())
    }

    fn take_segment(&self) -> io::Result<FreeSegment> {
        if let Some(s) = self.free.lock().unwrap().pop() {
            return Ok(s);
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let path = self.dir.join(format!("{id:08}.seg"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let segment = SegmentFile::new(id, &path, file);
        segment.write_header(1, DATA_START)?;
        fsync_dir(&self.dir)?;
        Ok(FreeSegment {
            segment: Arc::new(segment),
            generation: 1,
        })
    }

    fn recycled(&self, segment: Arc<SegmentFile>, generation: u64) {
        self.free.lock().unwrap().push(FreeSegment {
            segment,
            generation,
        });
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.tx.get_mut().unwrap().take();
    }
}

/// Appends one association's instances; leaves its segment to the materializer when dropped.
#[derive(Debug)]
pub struct JournalWriter {
    journal: Arc<Journal>,
    active: Option<(Arc<SegmentFile>, u64, u64)>,
    /// Where a record is assembled for its direct write (4 KiB-aligned inside); kept across
    /// appends, so its pages are touched once per association, not once per instance.
    scratch: Vec<u8>,
}

impl JournalWriter {
    /// Append a whole Part-10 file and make it durable. On success the instance is safe to
    /// acknowledge. Fails with `InvalidInput` when it is larger than [`Journal::max_payload`].
    pub fn append(&mut self, instance: RecordedInstance, payload: Vec<u8>) -> io::Result<()> {
        let uids = [&instance.study, &instance.series, &instance.sop];
        let len = RECORD_HEADER_LEN as u64
            + uids.iter().map(|u| u.as_str().len() as u64).sum::<u64>()
            + payload.len() as u64;
        if payload.len() as u64 > self.journal.max_payload() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "instance larger than a journal segment",
            ));
        }
        let span = align_up(len, RECORD_ALIGN);
        if let Some((_, _, tail)) = &self.active {
            if tail + span > self.journal.capacity {
                self.seal();
            }
        }
        if self.active.is_none() {
            let s = self.journal.take_segment()?;
            self.active = Some((s.segment, s.generation, DATA_START));
        }
        let (segment, generation, tail) = self.active.as_mut().expect("just set");
        let header = record_header(*generation, &instance, &payload);
        let offset = *tail;
        let written = write_durably(segment, &mut self.scratch, offset, &header, &payload);
        if self.scratch.len() > SCRATCH_KEPT {
            // one large instance does not pin its size for the rest of the association
            self.scratch = Vec::new();
        }
        if let Err(e) = written {
            // What reached the disk of this record may be replayed at the next start (a
            // harmless extra copy of an instance the peer was told failed); this segment is
            // left as it is and the next instance takes a fresh one.
            self.active = None;
            return Err(e);
        }
        *tail += span;
        let in_memory = self
            .journal
            .pending_bytes
            .fetch_add(payload.len() as u64, Relaxed)
            < MAX_PENDING_IN_MEMORY;
        let size = payload.len() as u64;
        let msg = Msg::Record {
            segment: segment.clone(),
            generation: *generation,
            end: *tail,
            offset,
            instance,
            bytes: in_memory.then_some(payload),
        };
        if !in_memory {
            self.journal.pending_bytes.fetch_sub(size, Relaxed);
        }
        // A materializer that stopped is not a lost instance: the record is durable and the
        // next start materializes it.
        let _ = self.journal.send(msg);
        Ok(())
    }

    fn seal(&mut self) {
        if let Some((segment, generation, tail)) = self.active.take() {
            let _ = self.journal.send(Msg::Sealed {
                segment,
                generation,
                tail,
            });
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.seal();
    }
}

/// Write one record (`header` then `payload`) at `offset` and make it durable: one direct,
/// synchronous write of the record padded to [`RECORD_ALIGN`] from an aligned place in
/// `scratch`, or a buffered write and `fdatasync` where direct I/O is unavailable or refused.
fn write_durably(
    segment: &SegmentFile,
    scratch: &mut Vec<u8>,
    offset: u64,
    header: &[u8],
    payload: &[u8],
) -> io::Result<()> {
    let len = header.len() + payload.len();
    let span = align_up(len as u64, RECORD_ALIGN) as usize;
    if let Some(direct) = &segment.direct {
        if !segment.direct_refused.load(Relaxed) {
            let need = span + RECORD_ALIGN as usize;
            if scratch.len() < need {
                scratch.resize(need, 0);
            }
            let at = scratch.as_ptr().align_offset(RECORD_ALIGN as usize);
            if at.checked_add(span).is_some_and(|end| end <= scratch.len()) {
                let block = &mut scratch[at..at + span];
                block[..header.len()].copy_from_slice(header);
                block[header.len()..len].copy_from_slice(payload);
                block[len..].fill(0);
                match direct.write_all_at(block, offset) {
                    Ok(()) => return Ok(()),
                    // the file system or device wants another alignment: buffered from now on
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        segment.direct_refused.store(true, Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    segment
        .file
        .write_all_at(header, offset)
        .and_then(|()| {
            segment
                .file
                .write_all_at(payload, offset + header.len() as u64)
        })
        .and_then(|()| segment.file.sync_data())
}

fn record_header(generation: u64, instance: &RecordedInstance, payload: &[u8]) -> Vec<u8> {
    let uids = [&instance.study, &instance.series, &instance.sop];
    let mut body = Vec::with_capacity(12 + 3 * 64);
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    for u in uids {
        body.push(u.as_str().len() as u8);
    }
    body.push(0);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&body);
    for u in uids {
        crc.update(u.as_str().as_bytes());
    }
    crc.update(payload);
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + 3 * 64);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for u in uids {
        out.extend_from_slice(u.as_str().as_bytes());
    }
    out
}

/// The whole records of `generation` from `from` on, up to the first one that is not whole;
/// each record starts at the next multiple of `align` after the one before.
fn scan(
    file: &File,
    generation: u64,
    from: u64,
    align: u64,
) -> impl Iterator<Item = io::Result<(RecordedInstance, Vec<u8>)>> + '_ {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut at = from;
    std::iter::from_fn(move || {
        let (record, end) = read_record(file, generation, at, len).transpose()?.ok()?;
        at = align_up(end, align);
        Some(Ok(record))
    })
}

/// The record at `at`, if it is whole; `Ok(None)` at the end of the segment's valid records.
#[allow(clippy::type_complexity)]
fn read_record(
    file: &File,
    generation: u64,
    at: u64,
    file_len: u64,
) -> io::Result<Option<((RecordedInstance, Vec<u8>), u64)>> {
    let mut h = [0u8; RECORD_HEADER_LEN];
    if at + RECORD_HEADER_LEN as u64 > file_len || file.read_exact_at(&mut h, at).is_err() {
        return Ok(None);
    }
    let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let gen = u64::from_le_bytes(h[4..12].try_into().unwrap());
    let payload_len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as u64;
    let lens = [h[16] as u64, h[17] as u64, h[18] as u64];
    let crc = u32::from_le_bytes(h[20..24].try_into().unwrap());
    let body_len = lens.iter().sum::<u64>() + payload_len;
    let end = at + RECORD_HEADER_LEN as u64 + body_len;
    if magic != RECORD_MAGIC || gen != generation || end > file_len {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len as usize];
    let mut reader = io::BufReader::new(ReadAt {
        file,
        at: at + RECORD_HEADER_LEN as u64,
    });
    reader.read_exact(&mut body)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[4..20]);
    hasher.update(&body);
    if hasher.finalize() != crc {
        return Ok(None);
    }
    let (a, b) = (lens[0] as usize, (lens[0] + lens[1]) as usize);
    let c = b + lens[2] as usize;
    let uid = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| Uid::new(s).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "journal record UID"))
    };
    let instance = RecordedInstance {
        study: uid(&body[..a])?,
        series: uid(&body[a..b])?,
        sop: uid(&body[b..c])?,
    };
    body.drain(..c);
    Ok(Some(((instance, body), end)))
}

struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Make everything written under `dir`'s file system durable (data, new files, folders).
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        rustix::fs::syncfs(&d)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        rustix::fs::sync();
        d.sync_all()
    }
}

#[derive(Default)]
struct SegmentProgress {
    checkpoint: u64,
    generation: u64,
    sealed_tail: Option<u64>,
    /// Offsets of this segment's stuck records: the checkpoint written stays below the first.
    stuck: BTreeSet<u64>,
}

impl SegmentProgress {
    /// The checkpoint that may be written: past every materialized record, before any stuck one.
    fn durable_checkpoint(&self) -> u64 {
        self.stuck
            .first()
            .map_or(self.checkpoint, |&s| s.min(self.checkpoint))
    }
}

struct Materializer {
    spool: Arc<Spool>,
    journal: std::sync::Weak<Journal>,
    pending_bytes: Arc<AtomicU64>,
    segments: HashMap<u64, (Arc<SegmentFile>, SegmentProgress)>,
    /// Segments whose header (checkpoint or recycling) is yet to be written.
    dirty: std::collections::BTreeSet<u64>,
    /// Records that could not be written into their study folder; retried with every batch
    /// (at least every second). Their segments' checkpoints stay before them.
    stuck: Vec<Msg>,
    /// How many records are stuck, for the metrics.
    stuck_instances: Arc<AtomicU64>,
}

fn msg_segment(msg: &Msg) -> Option<&Arc<SegmentFile>> {
    match msg {
        Msg::Record { segment, .. } | Msg::Sealed { segment, .. } => Some(segment),
        Msg::Barrier(_) => None,
    }
}

impl Materializer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Msg> = Vec::new();
        let mut failing = false;
        loop {
            if batch.is_empty() {
                if self.dirty.is_empty() && self.stuck.is_empty() {
                    match rx.recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => return,
                    }
                } else {
                    // a header write failed earlier, or records are stuck: retry them even if
                    // nothing new arrives
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(m) => batch.push(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
            // Lazy: while instances keep arriving, leave them in the journal (they are durable
            // there) and keep this thread's file creation off the CPUs that receive them.
            // Materialize once the stream pauses, a barrier asks, or enough has piled up.
            // Meanwhile this thread naps rather than waits on the channel: a record sent to a
            // waiting receiver wakes it (a futex call and a context switch per instance on the
            // acknowledgement path); a barrier unparks it (`Journal::send`).
            let mut batch_bytes = 0u64;
            let mut napped = false;
            while !batch.is_empty() {
                let before = batch.len();
                let mut closed = false;
                loop {
                    match rx.try_recv() {
                        Ok(m) => {
                            if let Msg::Record { bytes: Some(b), .. } = &m {
                                batch_bytes += b.len() as u64;
                            }
                            batch.push(m);
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed
                    || batch.iter().any(|m| matches!(m, Msg::Barrier(_)))
                    || batch_bytes >= LAZY_BATCH_BYTES
                    || batch.len() >= MAX_BATCH
                    // nothing came during the last nap: the stream paused
                    || (napped && batch.len() == before)
                {
                    break;
                }
                std::thread::park_timeout(LAZY_PAUSE);
                napped = true;
            }
            let retried = self.stuck.len();
            let mut work = std::mem::take(&mut self.stuck);
            work.append(&mut batch);
            let failed = match self.materialize(&work) {
                Ok(failed) => failed,
                Err(e) => {
                    // The file system cannot be synced: nothing was checkpointed, so nothing
                    // is lost: retry the same batch.
                    if !failing {
                        warn!(error = %e, "cannot materialize journalled instances into the spool; retrying");
                        failing = true;
                    }
                    batch = work.split_off(retried);
                    self.stuck = work;
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let mut done = Vec::with_capacity(work.len());
            for (i, msg) in work.into_iter().enumerate() {
                match failed.get(&i) {
                    Some(e) => {
                        if let Msg::Record {
                            instance, offset, ..
                        } = &msg
                        {
                            if i >= retried {
                                warn!(study = %instance.study, sop = %instance.sop, error = %e,
                                    "cannot write an acknowledged instance into its study folder; \
                                     it stays in the journal and is retried (its study is not emitted \
                                     meanwhile, other studies are)");
                                self.stuck_instances.fetch_add(1, Relaxed);
                            }
                            if let Some(segment) = msg_segment(&msg) {
                                self.progress(segment).stuck.insert(*offset);
                            }
                        }
                        self.stuck.push(msg);
                    }
                    None => {
                        if i < retried {
                            if let Msg::Record {
                                instance, offset, ..
                            } = &msg
                            {
                                info!(study = %instance.study, sop = %instance.sop, "a stuck instance is now in its study folder");
                                self.stuck_instances.fetch_sub(1, Relaxed);
                                if let Some(segment) = msg_segment(&msg) {
                                    self.progress(segment).stuck.remove(offset);
                                }
                            }
                        }
                        done.push(msg);
                    }
                }
            }
            self.apply(&done);
            let blocked: BTreeSet<Uid> = self
                .stuck
                .iter()
                .filter_map(|m| match m {
                    Msg::Record { instance, .. } => Some(instance.study.clone()),
                    _ => None,
                })
                .collect();
            for msg in done {
                if let Msg::Barrier(reply) = msg {
                    let _ = reply.send(blocked.clone());
                }
            }
            match self.write_headers() {
                Ok(()) if failing => {
                    info!("journal materializer recovered");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    // The instances are durable in their folders; a checkpoint not written
                    // only means they would be written again after a crash.
                    if !failing {
                        warn!(error = %e, "cannot write a journal checkpoint; retrying");
                        failing = true;
                    }
                }
            }
        }
    }

    fn progress(&mut self, segment: &Arc<SegmentFile>) -> &mut SegmentProgress {
        &mut self
            .segments
            .entry(segment.id)
            .or_insert_with(|| (segment.clone(), SegmentProgress::default()))
            .1
    }

    /// Write the batch's instances into their study folders and make them durable. Returns
    /// the records (by index) that could not be written; fails as a whole only when the file
    /// system cannot be synced. Idempotent, so a failed record or batch is simply retried.
    fn materialize(&self, batch: &[Msg]) -> io::Result<HashMap<usize, io::Error>> {
        let mut wrote = false;
        let mut failed = HashMap::new();
        let mut stamps = Vec::new();
        {
            let _guard = self.spool.blocking_read_folders();
            for (i, msg) in batch.iter().enumerate() {
                if let Msg::Record {
                    segment,
                    generation,
                    offset,
                    instance,
                    bytes,
                    ..
                } = msg
                {
                    let reread;
                    let payload = match bytes {
                        Some(b) => b.as_slice(),
                        None => {
                            let record = segment.file.metadata().and_then(|m| {
                                read_record(&segment.file, *generation, *offset, m.len())
                            });
                            match record {
                                Ok(Some(((_, payload), _))) => {
                                    reread = payload;
                                    reread.as_slice()
                                }
                                Ok(None) => {
                                    failed.insert(
                                        i,
                                        io::Error::new(
                                            io::ErrorKind::InvalidData,
                                            "a journal record cannot be read back",
                                        ),
                                    );
                                    continue;
                                }
                                Err(e) => {
                                    failed.insert(i, e);
                                    continue;
                                }
                            }
                        }
                    };
                    match self.spool.materialize(
                        &instance.study,
                        &instance.series,
                        &instance.sop,
                        payload,
                    ) {
                        Ok(stamp) => {
                            wrote = true;
                            if let Some(stamp) = stamp {
                                stamps.push((instance.sop.clone(), stamp));
                            }
                        }
                        Err(e) => {
                            failed.insert(i, e);
                        }
                    }
                }
            }
        }
        if wrote {
            sync_filesystem(self.spool.root())?;
        }
        if let Some(journal) = self.journal.upgrade() {
            if let Some(registry) = journal.registry.get() {
                for (sop, stamp) in stamps {
                    registry.fill(&sop, stamp.seq, stamp.digest);
                }
            }
        }
        Ok(failed)
    }

    /// Account for a materialized batch (exactly once per batch).
    fn apply(&mut self, batch: &[Msg]) {
        for msg in batch {
            let (segment, generation) = match msg {
                Msg::Record {
                    segment,
                    generation,
                    ..
                }
                | Msg::Sealed {
                    segment,
                    generation,
                    ..
                } => (segment, *generation),
                Msg::Barrier(_) => continue,
            };
            let (_, p) = self
                .segments
                .entry(segment.id)
                .or_insert_with(|| (segment.clone(), SegmentProgress::default()));
            p.generation = generation;
            p.checkpoint = p.checkpoint.max(DATA_START);
            match msg {
                Msg::Record { end, bytes, .. } => {
                    if let Some(b) = bytes {
                        self.pending_bytes.fetch_sub(b.len() as u64, Relaxed);
                    }
                    p.checkpoint = p.checkpoint.max(*end);
                }
                Msg::Sealed { tail, .. } => p.sealed_tail = Some(*tail),
                Msg::Barrier(_) => {}
            }
            self.dirty.insert(segment.id);
        }
    }

    /// Move checkpoints forward; recycle sealed segments that are wholly checkpointed.
    fn write_headers(&mut self) -> io::Result<()> {
        while let Some(&id) = self.dirty.first() {
            let (segment, p) = self.segments.get(&id).expect("dirty segments are tracked");
            match p.sealed_tail {
                Some(tail) if p.durable_checkpoint() >= tail => {
                    let generation = p.generation + 1;
                    segment.write_header(generation, DATA_START)?;
                    let (segment, _) = self.segments.remove(&id).expect("present");
                    if let Some(j) = self.journal.upgrade() {
                        j.recycled(segment, generation);
                    }
                }
                _ => segment.write_header(p.generation, p.durable_checkpoint())?,
            }
            self.dirty.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    fn instance(i: u32) -> (RecordedInstance, Vec<u8>) {
        let payload: Vec<u8> = (0..5000u32).map(|k| (k * 7 + i) as u8).collect();
        (
            RecordedInstance {
                study: uid("1.2.3"),
                series: uid("1.2.3.4"),
                sop: uid(&format!("1.2.3.4.{i}")),
            },
            payload,
        )
    }

    fn spool(dir: &Path) -> Arc<Spool> {
        Arc::new(Spool::open(dir).unwrap().0)
    }

    fn materialized(dir: &Path, i: u32) -> Option<Vec<u8>> {
        fs::read(dir.join(format!("1.2.3/1.2.3.4/1.2.3.4.{i}.dcm"))).ok()
    }

    #[test]
    fn acknowledged_records_survive_a_crash_and_a_torn_tail_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, rec) = Journal::open_inner(spool(dir.path()), 1 << 20, false).unwrap();
        assert_eq!(rec.instances, 0);
        let mut w = journal.writer();
        for i in 0..3 {
            let (inst, payload) = instance(i);
            w.append(inst, payload).unwrap();
        }
        // A fourth append torn halfway by the crash: never acknowledged.
        let (seg, generation, tail) = w.active.clone().unwrap();
        let (inst, payload) = instance(3);
        let mut torn = record_header(generation, &inst, &payload);
        torn.extend_from_slice(&payload[..payload.len() / 2]);
        seg.file.write_all_at(&torn, tail).unwrap();
        std::mem::forget(w); // the process died: no seal
        drop(journal);
        assert!(
            materialized(dir.path(), 0).is_none(),
            "nothing materialized yet"
        );

        let (journal, rec) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        assert_eq!(rec.instances, 3);
        for i in 0..3 {
            assert_eq!(materialized(dir.path(), i), Some(instance(i).1));
        }
        assert!(materialized(dir.path(), 3).is_none());
        journal.shutdown();
        drop(journal);
        // Recovery retired those records: a second start redoes nothing.
        let (_journal, rec) = Journal::open_inner(spool(dir.path()), 1 << 20, false).unwrap();
        assert_eq!((rec.instances, rec.segments), (0, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn materializer_checkpoints_and_recycles_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two records per segment: 20 records walk through segments, and sealed,
        // checkpointed ones are reused.
        let capacity = DATA_START + 2 * 2 * RECORD_ALIGN;
        let (journal, _) = Journal::open(spool(dir.path()), capacity).unwrap();
        let mut w = journal.writer();
        for i in 0..20 {
            let (inst, payload) = instance(i);
            w.append(inst, payload).unwrap();
            if i % 2 == 1 {
                journal.barrier().await.unwrap();
            }
        }
        journal.barrier().await.unwrap();
        for i in 0..20 {
            assert_eq!(
                materialized(dir.path(), i),
                Some(instance(i).1),
                "instance {i}"
            );
        }
        let segments = fs::read_dir(dir.path().join(JOURNAL_DIR)).unwrap().count();
        assert!(
            segments <= 3,
            "{segments} segment files for 20 small records"
        );
        assert_eq!(journal.pending_bytes(), 0);
        drop(w);
        journal.shutdown();
        drop(journal);
        // Everything was checkpointed: nothing to redo.
        let (_j, rec) = Journal::open_inner(spool(dir.path()), capacity, false).unwrap();
        assert_eq!(rec.instances, 0);
    }

    /// An instance of study 1.2.9, whose folder name a file takes: it cannot be written until
    /// the file (returned) is removed.
    fn blocked_study(spool: &Path) -> (PathBuf, RecordedInstance) {
        let blocker = spool.join("1.2.9");
        fs::write(&blocker, b"not a folder").unwrap();
        let bad = RecordedInstance {
            study: uid("1.2.9"),
            series: uid("1.2.9.1"),
            sop: uid("1.2.9.1.1"),
        };
        (blocker, bad)
    }

    /// Issue 13 item 10: one instance that cannot be written into its study folder (here the
    /// folder's name is taken by a file) used to stall the whole materializer, and every
    /// barrier with it: no study was emitted any more. Now that record stays in the journal,
    /// retried, its study is named by the barrier, and the others go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_unwritable_study_does_not_hold_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        let (blocker, bad) = blocked_study(dir.path());
        let mut w = journal.writer();
        w.append(bad, b"bad study".to_vec()).unwrap();
        for i in 0..3 {
            let (inst, payload) = instance(i);
            w.append(inst, payload).unwrap();
        }
        let held = tokio::time::timeout(Duration::from_secs(10), journal.barrier())
            .await
            .expect("the barrier answers")
            .unwrap();
        assert_eq!(held, BTreeSet::from([uid("1.2.9")]));
        for i in 0..3 {
            assert_eq!(materialized(dir.path(), i), Some(instance(i).1));
        }
        assert_eq!(journal.stuck_instances_counter().load(Relaxed), 1);
        drop(w);
        journal.shutdown();
        drop(journal);
        // A restart while it is stuck: its record was not checkpointed away.
        fs::remove_file(&blocker).unwrap();
        let (journal, rec) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        assert!(rec.instances >= 1, "the stuck record is redone");
        assert_eq!(
            fs::read(dir.path().join("1.2.9/1.2.9.1/1.2.9.1.1.dcm")).unwrap(),
            b"bad study"
        );
        assert!(journal.barrier().await.unwrap().is_empty());
    }

    /// A stuck record is retried on its own and released once its folder can be written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_instance_is_written_once_its_folder_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        let (blocker, bad) = blocked_study(dir.path());
        let mut w = journal.writer();
        w.append(bad, b"late".to_vec()).unwrap();
        assert_eq!(journal.barrier().await.unwrap().len(), 1);
        fs::remove_file(&blocker).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !journal.barrier().await.unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "still stuck");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            fs::read(dir.path().join("1.2.9/1.2.9.1/1.2.9.1.1.dcm")).unwrap(),
            b"late"
        );
        assert_eq!(journal.stuck_instances_counter().load(Relaxed), 0);
        drop(w);
        journal.shutdown();
        drop(journal);
        let (_j, rec) = Journal::open_inner(spool(dir.path()), 1 << 20, false).unwrap();
        assert_eq!(rec.instances, 0, "checkpointed once written");
    }

    /// A correction journalled in a lower-numbered segment than the copy it replaced (a
    /// recycled segment) is replayed first after a crash; the older copy replayed after it must
    /// not overwrite it (provenance sequence numbers).
    #[test]
    fn a_replay_keeps_the_later_copy_of_an_instance_whatever_the_segment_order() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open_inner(spool(dir.path()), 1 << 20, false).unwrap();
        let (inst, _) = instance(0);
        let stamped = crate::provenance::tests::stamped;
        let mut first_segment = journal.writer();
        let mut second_segment = journal.writer();
        first_segment
            .append(inst.clone(), stamped(20, b"the correction"))
            .unwrap();
        second_segment
            .append(inst, stamped(10, b"the original"))
            .unwrap();
        std::mem::forget(first_segment);
        std::mem::forget(second_segment);
        drop(journal);
        let (_journal, rec) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        assert_eq!(rec.instances, 2);
        assert!(materialized(dir.path(), 0)
            .unwrap()
            .ends_with(b"the correction"));
    }

    #[test]
    fn a_record_too_large_for_a_segment_is_refused_not_split() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open_inner(spool(dir.path()), 2 * DATA_START, false).unwrap();
        let (inst, _) = instance(0);
        let err = journal
            .writer()
            .append(inst, vec![0; 2 * DATA_START as usize])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn header_slots_alternate_and_the_newest_whole_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("1.seg"))
            .unwrap();
        let seg = SegmentFile::new(1, &dir.path().join("1.seg"), file);
        seg.write_header(1, DATA_START).unwrap();
        seg.write_header(1, 9000).unwrap();
        assert_eq!(seg.read_header(), Some((2, 1, 9000, RECORD_ALIGN)));
        // Tear the newer slot: the older one is used.
        seg.file
            .write_all_at(&[0xFF; 8], HEADER_SLOTS[0] + 24)
            .unwrap();
        assert_eq!(seg.read_header(), Some((1, 1, DATA_START, RECORD_ALIGN)));
    }

    #[test]
    fn records_start_at_multiples_of_4096_and_replay_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open_inner(spool(dir.path()), 1 << 20, false).unwrap();
        let mut w = journal.writer();
        for i in 0..3 {
            let (inst, payload) = instance(i);
            w.append(inst, payload).unwrap();
        }
        // 24 + 3 UIDs + 5000 bytes: two blocks each
        let (seg, _, tail) = w.active.clone().unwrap();
        assert_eq!(tail, DATA_START + 3 * 2 * RECORD_ALIGN);
        if seg.direct.is_some() && !seg.direct_refused.load(Relaxed) {
            assert_eq!(
                seg.file.metadata().unwrap().len(),
                tail,
                "padded to the block"
            );
        }
        std::mem::forget(w);
        drop(journal);
        let (_journal, rec) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        assert_eq!(rec.instances, 3);
        for i in 0..3 {
            assert_eq!(materialized(dir.path(), i), Some(instance(i).1));
        }
    }

    /// A journal an earlier version left (`SGNJSEG1`, records back to back) is replayed,
    /// then its segment is rewritten in the aligned format.
    #[test]
    fn an_earlier_versions_packed_segment_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join(JOURNAL_DIR);
        fs::create_dir_all(&jdir).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(jdir.join("00000001.seg"))
            .unwrap();
        let mut h = Vec::new();
        for word in [SEGMENT_MAGIC_PACKED, 1, 7, DATA_START] {
            h.extend_from_slice(&word.to_le_bytes());
        }
        h.extend_from_slice(&crc32fast::hash(&h).to_le_bytes());
        file.write_all_at(&h, HEADER_SLOTS[1]).unwrap();
        let mut at = DATA_START;
        for i in 0..3 {
            let (inst, payload) = instance(i);
            let mut record = record_header(7, &inst, &payload);
            record.extend_from_slice(&payload);
            file.write_all_at(&record, at).unwrap();
            at += record.len() as u64;
        }
        drop(file);
        let (journal, rec) = Journal::open(spool(dir.path()), 1 << 20).unwrap();
        assert_eq!((rec.segments, rec.instances), (1, 3));
        for i in 0..3 {
            assert_eq!(materialized(dir.path(), i), Some(instance(i).1));
        }
        let seg = journal.free.lock().unwrap()[0].segment.clone();
        let (_, generation, _, align) = seg.read_header().unwrap();
        assert_eq!((generation, align), (8, RECORD_ALIGN));
    }

    /// Without direct I/O (a file system that refuses O_DIRECT at open, or refused a direct
    /// write) a record is written buffered and fdatasynced, and reads back the same.
    #[test]
    fn a_segment_without_direct_io_gets_buffered_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (inst, payload) = instance(1);
        let header = record_header(3, &inst, &payload);
        for refused in [false, true] {
            let path = dir.path().join(format!("{refused}.seg"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            let mut seg = SegmentFile::new(1, &path, file);
            if refused {
                seg.direct_refused.store(true, Relaxed);
            } else {
                seg.direct = None;
            }
            let mut scratch = Vec::new();
            write_durably(&seg, &mut scratch, DATA_START, &header, &payload).unwrap();
            assert!(scratch.is_empty(), "the direct path ran");
            let len = seg.file.metadata().unwrap().len();
            let ((read, body), _) = read_record(&seg.file, 3, DATA_START, len).unwrap().unwrap();
            assert_eq!((read, body), (inst.clone(), payload.clone()));
        }
    }
}
