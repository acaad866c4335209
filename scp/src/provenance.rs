//! Who sent each staged instance, and what exactly they sent: the record that lets the listener
//! tell a re-sent instance (same SOP Instance UID) that is identical, a correction by its sender,
//! or a conflicting copy from someone else (docs/NOTES.md, "Re-sent instances").
//!
//! **The caller** ([`CallerId`]) is the calling AE title, the peer's IP address (not its port,
//! which changes with every association) and, on the TLS port, the client certificate's subject.
//! Two associations are the same caller when all three are equal.
//!
//! **The digest** is SHA-256 of the data set bytes exactly as received (after our File Meta
//! Information, in the negotiated transfer syntax): nothing is parsed or re-encoded, so it is
//! cheap (SHA-NI), deterministic, and names the bytes the SEG will be computed from. The same
//! image re-sent in another transfer syntax therefore counts as different content.
//!
//! **Durable with the instance**: the [`Stamp`] (caller, digest, and a sequence number that
//! orders receptions) is written into the instance's own File Meta Information as Private
//! Information (0002,0102) under our creator UID (0002,0100), so it is in the journal record,
//! the study folder's file and the staged object, exactly where the instance is: a journal
//! replay restores both together, with no extra write or sync on the acknowledgement path.
//! The header is built with placeholders of fixed width when the C-STORE starts; the sequence
//! number is patched in once the data set is complete. The digest is not computed on the
//! acknowledgement path (SHA-256 of each instance was the largest user-space cost in the ingest
//! profile, bench/ingest/RESULTS.md): a journalled instance's record carries a zero digest and
//! the journal materializer computes and writes it when it puts the instance into its study
//! folder ([`complete`]), then tells the registry. Only a C-STORE of a UID that is already
//! staged hashes its own data set at once, and waits (nudging the materializer) if the staged
//! copy's digest is not known yet. Instances on the file path (over a journal segment) are
//! hashed as they stream and stamped before their fsync. A journal replay recomputes the same
//! digest from the same bytes.
//!
//! **The [`Registry`]** maps SOP Instance UIDs to their stamps for every instance in the spool
//! (journal, study folders, studies being emitted), rebuilt from the files at start, and for
//! [`EMITTED_WINDOW`] after its study's job was enqueued (kept in `spool/.provenance/`).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use staging::Uid;

use crate::sop::IMPLEMENTATION_CLASS_UID;

/// Private Information Creator UID (0002,0100) of our stamp: under segnode's implementation
/// class UID root.
pub fn creator_uid() -> String {
    format!("{IMPLEMENTATION_CLASS_UID}.1")
}

/// How long after its study's job was enqueued an instance's stamp is still enforced: a
/// conflicting copy from another caller is refused, an identical one acknowledged without
/// staging it again. The SQLite queue drops a re-sent job id for the same 24 hours.
pub const EMITTED_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// At most this many emitted instances are remembered (oldest forgotten first): about 100 MB.
pub const MAX_EMITTED: usize = 500_000;
/// Subjects longer than this are cut (at a character boundary) in the stamp.
const MAX_SUBJECT: usize = 512;
const MAX_AE: usize = 64;
pub const PROVENANCE_DIR: &str = ".provenance";

/// Who sent an instance (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerId {
    pub ae: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl CallerId {
    pub fn new(ae: &str, ip: IpAddr, subject: Option<&str>) -> CallerId {
        CallerId {
            ae: cut(ae.trim(), MAX_AE),
            ip,
            subject: subject.map(|s| cut(s, MAX_SUBJECT)),
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What the File Meta Information of a received instance says about its reception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub caller: CallerId,
    pub digest: [u8; 32],
    /// Orders receptions (also across restarts): the higher one is the later copy.
    pub seq: u64,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    /// Format version.
    segnode_provenance: u32,
    /// Fixed width (64 hex digits); first, so that its offset is found without parsing.
    sha256: String,
    /// Fixed width (20 decimal digits).
    seq: String,
    #[serde(flatten)]
    caller: CallerId,
}

const SHA_KEY: &[u8] = b"\"sha256\":\"";
const SEQ_KEY: &[u8] = b"\"seq\":\"";
const SEQ_WIDTH: usize = 20;

/// The Private Information value for `caller` with zeroed digest and sequence number: patched
/// by [`Placeholders::fill`] once the data set is complete.
pub fn private_information(caller: &CallerId) -> Vec<u8> {
    let wire = Wire {
        segnode_provenance: 1,
        sha256: "0".repeat(64),
        seq: "0".repeat(SEQ_WIDTH),
        caller: caller.clone(),
    };
    let mut v = serde_json::to_vec(&wire).expect("serialisable");
    if v.len() % 2 == 1 {
        v.push(b' ');
    }
    v
}

/// Where the digest and the sequence number sit in a Part-10 header built with
/// [`private_information`].
#[derive(Debug, Clone, Copy)]
pub struct Placeholders {
    sha: usize,
    seq: usize,
}

impl Placeholders {
    /// Find them in `header` (the preamble, "DICM" and the File Meta Information).
    pub fn find(header: &[u8]) -> Option<Placeholders> {
        let sha = find(header, SHA_KEY)? + SHA_KEY.len();
        let seq = find(&header[sha..], SEQ_KEY)? + sha + SEQ_KEY.len();
        (sha + 64 <= header.len() && seq + SEQ_WIDTH <= header.len())
            .then_some(Placeholders { sha, seq })
    }

    /// The patches, as (offset, bytes): the sequence number, and the digest if it is known
    /// (else it stays zero, for the journal materializer to fill).
    pub fn fill(&self, digest: Option<&[u8; 32]>, seq: u64) -> Vec<(usize, Vec<u8>)> {
        let mut out = vec![(self.seq, format!("{seq:020}").into_bytes())];
        if let Some(d) = digest {
            out.push((self.sha, hex(d).into_bytes()));
        }
        out
    }

    /// Patch a header held in memory.
    pub fn fill_in(&self, header: &mut [u8], digest: Option<&[u8; 32]>, seq: u64) {
        for (at, bytes) in self.fill(digest, seq) {
            header[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a data set.
pub fn digest(data_set: &[u8]) -> [u8; 32] {
    Sha256::digest(data_set).into()
}

/// Where the data set starts in a Part-10 file that begins with a preamble, "DICM" and an
/// explicit-length File Meta group (as we write them): after (0002,0000)'s group length.
pub fn data_set_start(part10: &[u8]) -> Option<usize> {
    if part10.get(128..132)? != b"DICM" || part10.get(132..138)? != b"\x02\x00\x00\x00UL" {
        return None;
    }
    let len = u32::from_le_bytes(part10.get(140..144)?.try_into().ok()?) as usize;
    let start = 144usize.checked_add(len)?;
    (start <= part10.len()).then_some(start)
}

/// For the journal materializer: the stamp of a journalled instance with its digest computed
/// if the record left it zero, and the header to write in place of the record's (the data set
/// follows unchanged from the returned offset). None for bytes without our stamp.
pub fn complete(part10: &[u8]) -> Option<(Vec<u8>, usize, Stamp)> {
    let start = data_set_start(part10)?;
    let mut header = part10[..start].to_vec();
    let mut stamp = read_stamp(&header[..])?;
    if stamp.digest == [0; 32] {
        stamp.digest = digest(&part10[start..]);
        Placeholders::find(&header)?.fill_in(&mut header, Some(&stamp.digest), stamp.seq);
    }
    Some((header, start, stamp))
}

/// The incremental digest of a data set as it arrives.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The stamp in a Part-10 file's header, if it has ours (files staged by an older build do
/// not). Reads only the File Meta Information.
pub fn read_stamp(part10: impl Read) -> Option<Stamp> {
    let mut r = part10;
    let mut preamble = [0u8; 128];
    r.read_exact(&mut preamble).ok()?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(r).ok()?;
    if meta.private_information_creator_uid()? != creator_uid() {
        return None;
    }
    let wire: Wire = serde_json::from_slice(meta.private_information.as_deref()?).ok()?;
    if wire.segnode_provenance != 1 {
        return None;
    }
    Some(Stamp {
        caller: wire.caller,
        digest: unhex(&wire.sha256)?,
        seq: wire.seq.parse().ok()?,
    })
}

pub fn read_stamp_file(path: &Path) -> Option<Stamp> {
    let f = fs::File::open(path).ok()?;
    read_stamp(io::BufReader::with_capacity(4096, f))
}

/// What to do with a C-STORE of an instance whose UID may already be staged.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Store it with this sequence number; then [`Registry::commit`] or [`Registry::abort`].
    /// `replaces`: a same-caller correction of a staged copy.
    Store { seq: u64, replaces: bool },
    /// The same bytes are staged already: acknowledge, do not stage again.
    Identical,
    /// Another caller's different copy is staged: refuse. The staged copy's caller and study.
    Conflict { original: CallerId, study: Uid },
    /// Another association is storing this SOP Instance UID right now, or the staged copy's
    /// digest is not computed yet: ask again shortly.
    Busy,
    /// The UID is staged: ask again with the new data set's digest.
    NeedDigest,
}

#[derive(Debug, Clone)]
enum State {
    /// Being made durable by a C-STORE; what it replaces, if anything.
    InFlight(Option<Box<Entry>>),
    /// In the journal or the spool.
    Staged,
    /// Its job is on the queue; remembered for the emitted window (`Inner::emitted` says until
    /// when).
    Emitted,
}

#[derive(Debug, Clone)]
struct Entry {
    study: Uid,
    caller: CallerId,
    /// None until the journal materializer has computed it.
    digest: Option<[u8; 32]>,
    seq: u64,
    state: State,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    next_seq: u64,
    /// (until ms, sop, seq) of emitted entries, oldest first.
    emitted: VecDeque<(u64, String, u64)>,
}

/// The stamps of the instances the listener enforces (see the module documentation).
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    window: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One emitted instance as kept in `spool/.provenance/<ms>-<study>.jsonl`.
#[derive(Serialize, Deserialize)]
struct EmittedLine {
    sop: String,
    study: String,
    sha256: String,
    seq: u64,
    until_ms: u64,
    #[serde(flatten)]
    caller: CallerId,
}

impl Registry {
    pub fn new(window: Duration) -> Registry {
        Registry {
            inner: Mutex::new(Inner {
                next_seq: now_ns(),
                ..Inner::default()
            }),
            window,
        }
    }

    /// The registry of a spool after its journal was replayed: every instance in a study
    /// folder or an emission, and the emitted instances of the last [`EMITTED_WINDOW`] (older
    /// records are deleted). Files without our stamp (staged by an older build) are not
    /// enforced. Returns the registry and how many instances it holds.
    pub fn rebuild(spool: &crate::spool::Spool, window: Duration) -> io::Result<(Registry, usize)> {
        let reg = Registry::new(window);
        let mut inner = reg.inner.lock().unwrap();
        let mut max_seq = 0;
        // Emitted first: a copy still in the spool is newer and overwrites it below.
        let dir = spool.root().join(PROVENANCE_DIR);
        fs::create_dir_all(&dir)?;
        let now = now_ms();
        let mut files: Vec<_> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for path in files {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let mut live = false;
            for line in text.lines() {
                let Ok(l) = serde_json::from_str::<EmittedLine>(line) else {
                    continue; // a torn last line
                };
                let (Ok(study), Some(digest)) = (Uid::new(&l.study), unhex(&l.sha256)) else {
                    continue;
                };
                max_seq = max_seq.max(l.seq);
                if l.until_ms <= now {
                    continue;
                }
                live = true;
                inner.emitted.push_back((l.until_ms, l.sop.clone(), l.seq));
                inner.entries.insert(
                    l.sop,
                    Entry {
                        study,
                        caller: l.caller,
                        digest: Some(digest),
                        seq: l.seq,
                        state: State::Emitted,
                    },
                );
            }
            if !live {
                let _ = fs::remove_file(&path);
            }
        }
        inner
            .emitted
            .make_contiguous()
            .sort_by_key(|(until, _, _)| *until);
        let mut folders: Vec<(std::path::PathBuf, Uid)> = spool
            .pending_studies()?
            .into_iter()
            .map(|s| (spool.root().join(s.as_str()), s))
            .collect();
        folders.extend(spool.emitting()?);
        for (folder, study) in folders {
            for inst in crate::spool::Spool::instances_in(&folder)? {
                let Some(mut stamp) = read_stamp_file(&inst.path) else {
                    continue;
                };
                if stamp.digest == [0; 32] {
                    // not expected (the materializer stamps every file it writes); recompute
                    let bytes = fs::read(&inst.path)?;
                    match data_set_start(&bytes) {
                        Some(start) => stamp.digest = digest(&bytes[start..]),
                        None => continue,
                    }
                }
                max_seq = max_seq.max(stamp.seq);
                let newer = inner
                    .entries
                    .get(inst.sop.as_str())
                    .is_none_or(|e| matches!(e.state, State::Emitted) || e.seq < stamp.seq);
                if newer {
                    inner.entries.insert(
                        inst.sop.to_string(),
                        Entry {
                            study: study.clone(),
                            caller: stamp.caller,
                            digest: Some(stamp.digest),
                            seq: stamp.seq,
                            state: State::Staged,
                        },
                    );
                }
            }
        }
        inner.next_seq = inner.next_seq.max(max_seq + 1);
        let n = inner.entries.len();
        drop(inner);
        Ok((reg, n))
    }

    /// Decide what to do with a received instance (see [`Claim`]). `digest`: of its data set,
    /// if computed already; a new UID is claimed without it.
    pub fn claim(
        &self,
        sop: &Uid,
        study: &Uid,
        caller: &CallerId,
        digest: Option<&[u8; 32]>,
    ) -> Claim {
        let mut inner = self.inner.lock().unwrap();
        inner.expire(now_ms());
        let seq = inner.next_seq;
        let previous = match inner.entries.get(sop.as_str()) {
            None => None,
            Some(e) if matches!(e.state, State::InFlight(_)) => return Claim::Busy,
            Some(_) if digest.is_none() => return Claim::NeedDigest,
            Some(e) if e.digest.is_none() => return Claim::Busy,
            Some(e) if e.digest.as_ref() == digest => return Claim::Identical,
            Some(e) if &e.caller == caller => Some(Box::new(e.clone())),
            Some(e) => {
                return Claim::Conflict {
                    original: e.caller.clone(),
                    study: e.study.clone(),
                }
            }
        };
        inner.next_seq += 1;
        let replaces = previous.is_some();
        inner.entries.insert(
            sop.to_string(),
            Entry {
                study: study.clone(),
                caller: caller.clone(),
                digest: digest.copied(),
                seq,
                state: State::InFlight(previous),
            },
        );
        Claim::Store { seq, replaces }
    }

    /// The claimed instance is durable (acknowledged).
    pub fn commit(&self, sop: &Uid, seq: u64) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(e) = inner.entries.get_mut(sop.as_str()) {
            if e.seq == seq {
                e.state = State::Staged;
            }
        }
    }

    /// The journal materializer computed the digest of the instance received as `seq`.
    pub fn fill(&self, sop: &Uid, seq: u64, digest: [u8; 32]) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(e) = inner.entries.get_mut(sop.as_str()) {
            if e.seq == seq && e.digest.is_none() {
                e.digest = Some(digest);
            }
        }
    }

    /// The claimed instance was not stored: what it would have replaced is back.
    pub fn abort(&self, sop: &Uid, seq: u64) {
        let mut inner = self.inner.lock().unwrap();
        let Some(e) = inner.entries.get_mut(sop.as_str()) else {
            return;
        };
        if e.seq != seq {
            return;
        }
        match std::mem::replace(&mut e.state, State::Staged) {
            State::InFlight(Some(previous)) => *e = *previous,
            State::InFlight(None) => {
                inner.entries.remove(sop.as_str());
            }
            other => e.state = other,
        }
    }

    /// These instances' study was emitted (its job is on the queue): keep enforcing their
    /// stamps for the window, durably in `spool/.provenance/` (written and fsynced before the
    /// caller removes the spooled copies). An instance re-sent meanwhile (a newer sequence
    /// number) keeps its own entry.
    pub fn emitted(
        &self,
        spool_root: &Path,
        study: &Uid,
        stamps: &[(Uid, Stamp)],
    ) -> io::Result<()> {
        if stamps.is_empty() || self.window.is_zero() {
            let mut inner = self.inner.lock().unwrap();
            for (sop, stamp) in stamps {
                if inner
                    .entries
                    .get(sop.as_str())
                    .is_some_and(|e| e.seq == stamp.seq)
                {
                    inner.entries.remove(sop.as_str());
                }
            }
            return Ok(());
        }
        let until = now_ms() + self.window.as_millis() as u64;
        let mut text = String::new();
        for (sop, stamp) in stamps {
            let line = EmittedLine {
                sop: sop.to_string(),
                study: study.to_string(),
                sha256: hex(&stamp.digest),
                seq: stamp.seq,
                until_ms: until,
                caller: stamp.caller.clone(),
            };
            text.push_str(&serde_json::to_string(&line).expect("serialisable"));
            text.push('\n');
        }
        let dir = spool_root.join(PROVENANCE_DIR);
        let path = dir.join(format!("{}-{}.jsonl", now_ms(), study));
        staging::write_synced(&path, text.as_bytes())?;
        staging::fsync_dir(&dir)?;
        let mut inner = self.inner.lock().unwrap();
        for (sop, stamp) in stamps {
            match inner.entries.get_mut(sop.as_str()) {
                Some(e) if e.seq == stamp.seq => {
                    e.state = State::Emitted;
                    e.digest = Some(stamp.digest);
                }
                Some(_) => continue,
                None => {
                    inner.entries.insert(
                        sop.to_string(),
                        Entry {
                            study: study.clone(),
                            caller: stamp.caller.clone(),
                            digest: Some(stamp.digest),
                            seq: stamp.seq,
                            state: State::Emitted,
                        },
                    );
                }
            }
            inner.emitted.push_back((until, sop.to_string(), stamp.seq));
        }
        while inner.emitted.len() > MAX_EMITTED {
            let (_, sop, seq) = inner.emitted.pop_front().expect("non-empty");
            inner.forget_emitted(&sop, seq);
        }
        Ok(())
    }

    /// Instances enforced now (for tests and the log).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: u64) {
        while self
            .emitted
            .front()
            .is_some_and(|(until, _, _)| *until <= now)
        {
            let (_, sop, seq) = self.emitted.pop_front().expect("non-empty");
            self.forget_emitted(&sop, seq);
        }
    }

    fn forget_emitted(&mut self, sop: &str, seq: u64) {
        if self
            .entries
            .get(sop)
            .is_some_and(|e| e.seq == seq && matches!(e.state, State::Emitted))
        {
            self.entries.remove(sop);
        }
    }
}

/// How long a C-STORE waits for another association that is storing the same SOP Instance UID.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// [`Registry::claim`] with the data set's digest if it is `known` (the file path hashes as it
/// streams), else computing it (`digest`) only if the UID is staged already, and waiting (this thread sleeps: it is the association's blocking step) while
/// another association holds the UID or the staged copy's digest is pending (`nudge` asks the
/// journal materializer to compute it now); still [`Claim::Busy`] after [`BUSY_WAIT`]. Returns
/// the digest too if it was computed.
pub(crate) fn claim(
    registry: &Registry,
    sop: &Uid,
    study: &Uid,
    caller: &CallerId,
    known: Option<[u8; 32]>,
    mut digest: impl FnMut() -> [u8; 32],
    nudge: impl Fn(),
) -> (Claim, Option<[u8; 32]>) {
    let until = std::time::Instant::now() + BUSY_WAIT;
    let mut computed = known;
    loop {
        match registry.claim(sop, study, caller, computed.as_ref()) {
            Claim::NeedDigest => computed = Some(digest()),
            Claim::Busy if std::time::Instant::now() < until => {
                nudge();
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return (other, computed),
        }
    }
}

/// The status for a UID another association held for longer than [`BUSY_WAIT`].
pub(crate) fn busy() -> (crate::dimse::Status, String) {
    (
        crate::dimse::Status::ProcessingFailure,
        "instance being stored by another association".into(),
    )
}

/// The Error Comment of a refused conflicting copy (at most 64 characters: LO).
pub const CONFLICT_COMMENT: &str = "conflict: another caller's different copy of it is staged";

/// Refuse another caller's different copy of a staged instance: 0xC000 with an Error Comment,
/// a warning (UIDs and escaped AE titles only), an audit event and a metric. The staged copy is
/// kept. 0xC000 (the "cannot understand" family, refused for good) rather than 0xA900 (the data
/// set does not match its SOP class: untrue here) or 0xA7xx (out of resources: invites a retry
/// that cannot succeed).
pub(crate) fn refuse_conflict(
    audit: &audit::AuditLog,
    metrics: &crate::ScpMetrics,
    caller: &audit::Caller,
    study: &Uid,
    sop: &str,
    staged_by: &CallerId,
) -> (crate::dimse::Status, Option<String>) {
    use staging::Escaped;
    crate::ScpMetrics::inc(&metrics.instances_conflicting);
    crate::ScpMetrics::inc(&metrics.store_failed_cannot_understand);
    tracing::warn!(
        study = %study,
        sop = %Escaped(sop),
        calling_ae = %Escaped(&caller.calling_ae),
        peer = %Escaped(&caller.peer),
        staged_by_ae = %Escaped(&staged_by.ae),
        staged_by_ip = %staged_by.ip,
        status = "0xC000",
        "C-STORE refused: another caller's different copy of this instance is staged; the staged copy is kept"
    );
    audit.record(audit::Event::InstanceConflict {
        caller: caller.clone(),
        study_uid: study.to_string(),
        sop_instance_uid: sop.to_string(),
        staged_by: audit::Caller {
            calling_ae: staged_by.ae.clone(),
            peer: staged_by.ip.to_string(),
            tls_subject: staged_by.subject.clone(),
        },
        reason: "another caller's different copy of this SOP Instance UID is staged".into(),
    });
    (
        crate::dimse::Status::CannotUnderstand,
        Some(CONFLICT_COMMENT.into()),
    )
}

/// Remove emitted-window files whose every line has expired (called now and then).
pub fn prune_emitted_files(spool_root: &Path, window: Duration) {
    let Ok(entries) = fs::read_dir(spool_root.join(PROVENANCE_DIR)) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > window + Duration::from_secs(60));
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    fn caller(ae: &str, ip: &str) -> CallerId {
        CallerId::new(ae, ip.parse().unwrap(), None)
    }

    #[test]
    fn identical_correction_and_conflict() {
        let reg = Registry::new(EMITTED_WINDOW);
        let (sop, study) = (uid("1.2.3.4"), uid("1.2.3"));
        let a = caller("PACS_A", "10.0.0.1");
        let Claim::Store { seq, replaces } = reg.claim(&sop, &study, &a, Some(&[1; 32])) else {
            panic!("first copy is stored");
        };
        assert!(!replaces);
        assert_eq!(reg.claim(&sop, &study, &a, Some(&[1; 32])), Claim::Busy);
        reg.commit(&sop, seq);
        assert_eq!(
            reg.claim(&sop, &study, &a, Some(&[1; 32])),
            Claim::Identical
        );
        // identical bytes from anyone: nothing to refuse, nothing to stage
        let b = caller("PACS_A", "10.0.0.2");
        assert_eq!(
            reg.claim(&sop, &study, &b, Some(&[1; 32])),
            Claim::Identical
        );
        // other content from another address with the same AE title: not the same caller
        assert_eq!(
            reg.claim(&sop, &study, &b, Some(&[2; 32])),
            Claim::Conflict {
                original: a.clone(),
                study: study.clone()
            }
        );
        // the same caller's correction replaces, and a failed one restores the original
        let Claim::Store { seq: s2, replaces } = reg.claim(&sop, &study, &a, Some(&[2; 32])) else {
            panic!("a correction is stored");
        };
        assert!(replaces && s2 > seq);
        reg.abort(&sop, s2);
        assert_eq!(
            reg.claim(&sop, &study, &a, Some(&[1; 32])),
            Claim::Identical
        );
        let Claim::Store { seq: s3, .. } = reg.claim(&sop, &study, &a, Some(&[3; 32])) else {
            panic!();
        };
        reg.commit(&sop, s3);
        assert_eq!(
            reg.claim(&sop, &study, &a, Some(&[3; 32])),
            Claim::Identical
        );
        // a TLS subject is part of the caller
        let a_tls = CallerId::new("PACS_A", "10.0.0.1".parse().unwrap(), Some("CN=x"));
        assert!(matches!(
            reg.claim(&sop, &study, &a_tls, Some(&[4; 32])),
            Claim::Conflict { .. }
        ));
    }

    fn header(caller: &CallerId) -> Vec<u8> {
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.4")
            .media_storage_sop_instance_uid("1.2.3.4")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .private_information_creator_uid(creator_uid())
            .private_information(private_information(caller))
            .build()
            .unwrap();
        let mut header = vec![0u8; 128];
        header.extend_from_slice(b"DICM");
        meta.write(&mut header).unwrap();
        header
    }

    /// A copy stamped with `seq` (its data set: `body`).
    pub(crate) fn stamped(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut b = header(&caller("PACS_A", "10.0.0.1"));
        Placeholders::find(&b)
            .unwrap()
            .fill_in(&mut b, Some(&[seq as u8; 32]), seq);
        b.extend_from_slice(body);
        b
    }

    /// A journalled copy is acknowledged without its digest; the materializer computes it,
    /// writes it into the study folder's copy and gives it to the registry, which meanwhile
    /// holds a re-sent copy back (Busy) rather than guess.
    #[test]
    fn the_digest_of_a_journalled_copy_is_computed_when_it_is_materialized() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = crate::spool::Spool::open(dir.path()).unwrap();
        let reg = Registry::new(EMITTED_WINDOW);
        let (study, series, sop) = (uid("1.2.3"), uid("1.2.3.1"), uid("1.2.3.1.1"));
        let a = caller("PACS_A", "10.0.0.1");
        let Claim::Store { seq, .. } = reg.claim(&sop, &study, &a, None) else {
            panic!("a new UID needs no digest")
        };
        reg.commit(&sop, seq);
        let mut record = header(&a);
        Placeholders::find(&record)
            .unwrap()
            .fill_in(&mut record, None, seq);
        record.extend_from_slice(b"the data set");
        let want = digest(b"the data set");
        assert_eq!(reg.claim(&sop, &study, &a, None), Claim::NeedDigest);
        assert_eq!(reg.claim(&sop, &study, &a, Some(&want)), Claim::Busy);
        let stamp = spool
            .materialize(&study, &series, &sop, &record)
            .unwrap()
            .unwrap();
        assert_eq!((stamp.digest, stamp.seq), (want, seq));
        let file = dir.path().join("1.2.3/1.2.3.1/1.2.3.1.1.dcm");
        assert_eq!(read_stamp_file(&file).unwrap(), stamp);
        assert!(fs::read(&file).unwrap().ends_with(b"the data set"));
        reg.fill(&sop, stamp.seq, stamp.digest);
        assert_eq!(reg.claim(&sop, &study, &a, Some(&want)), Claim::Identical);
    }

    /// A correction that reaches the study folder before the copy it replaced (journal
    /// segments replayed in segment order, or the correction on the file path) stays.
    #[test]
    fn the_spool_never_puts_an_older_copy_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = crate::spool::Spool::open(dir.path()).unwrap();
        let (study, series, sop) = (uid("1.2.3"), uid("1.2.3.1"), uid("1.2.3.1.1"));
        let file = dir.path().join("1.2.3/1.2.3.1/1.2.3.1.1.dcm");
        spool
            .materialize(&study, &series, &sop, &stamped(20, b"corrected"))
            .unwrap();
        spool
            .materialize(&study, &series, &sop, &stamped(10, b"original"))
            .unwrap();
        assert_eq!(read_stamp_file(&file).unwrap().seq, 20);
        assert!(fs::read(&file).unwrap().ends_with(b"corrected"));
        spool
            .materialize(&study, &series, &sop, &stamped(30, b"again"))
            .unwrap();
        assert!(fs::read(&file).unwrap().ends_with(b"again"));
    }

    #[test]
    fn the_stamp_round_trips_through_a_file_header_and_is_patched_in_place() {
        let caller = CallerId::new("PACS\n\"x", "::1".parse().unwrap(), Some("CN=a,O=b"));
        let mut header = header(&caller);
        let spots = Placeholders::find(&header).unwrap();
        let before = header.len();
        spots.fill_in(&mut header, Some(&[0xAB; 32]), 12345);
        assert_eq!(header.len(), before);
        let stamp = read_stamp(&header[..]).unwrap();
        assert_eq!(
            stamp,
            Stamp {
                caller,
                digest: [0xAB; 32],
                seq: 12345
            }
        );
    }

    #[test]
    fn emitted_stamps_survive_a_restart_and_expire_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = crate::spool::Spool::open(dir.path()).unwrap();
        let (reg, n) = Registry::rebuild(&spool, EMITTED_WINDOW).unwrap();
        assert_eq!(n, 0);
        let (sop, study) = (uid("1.2.3.4"), uid("1.2.3"));
        let a = caller("PACS_A", "10.0.0.1");
        let Claim::Store { seq, .. } = reg.claim(&sop, &study, &a, Some(&[1; 32])) else {
            panic!()
        };
        reg.commit(&sop, seq);
        let stamp = Stamp {
            caller: a.clone(),
            digest: [1; 32],
            seq,
        };
        reg.emitted(spool.root(), &study, &[(sop.clone(), stamp)])
            .unwrap();
        drop(reg);
        let (reg, n) = Registry::rebuild(&spool, EMITTED_WINDOW).unwrap();
        assert_eq!(n, 1);
        let b = caller("PACS_B", "10.0.0.2");
        assert!(matches!(
            reg.claim(&sop, &study, &b, Some(&[2; 32])),
            Claim::Conflict { .. }
        ));
        let Claim::Store { seq: s2, .. } = reg.claim(&sop, &study, &a, Some(&[2; 32])) else {
            panic!()
        };
        assert!(s2 > seq, "sequence numbers keep growing across restarts");
        // past the window the stamp is forgotten: the UID may be staged again by anyone
        let reg = Registry::new(Duration::from_millis(1));
        let Claim::Store { seq, .. } = reg.claim(&sop, &study, &a, Some(&[1; 32])) else {
            panic!()
        };
        reg.commit(&sop, seq);
        let stamp = Stamp {
            caller: a,
            digest: [1; 32],
            seq,
        };
        reg.emitted(spool.root(), &study, &[(sop.clone(), stamp)])
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(
            reg.claim(&sop, &study, &b, Some(&[2; 32])),
            Claim::Store {
                replaces: false,
                ..
            }
        ));
    }
}
