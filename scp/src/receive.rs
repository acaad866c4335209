//! Receiving one C-STORE's data set and making it durable before its status: the `.part`
//! buffer, the decision to take it (presentation context, disk space, header), then the journal
//! path (one append + fdatasync) or the file path (fsync + rename into its study folder), the
//! provenance claim on the way (identical / correction / conflict), and the status it gets.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dicom_ul::pdu::{PresentationContextNegotiated, PresentationContextResultReason};
use staging::Escaped;
use tracing::{debug, info, warn};

use crate::association::Connection;
use crate::dimse::{Command, Status};
use crate::journal::{Journal, RecordedInstance};
use crate::metrics::ScpMetrics;
use crate::part10::{checked_sop, file_header, identify, Identity, Refusal, Source};
use crate::provenance::{CallerId, Claim};
use crate::spool::Spool;

/// A C-STORE whose data set is arriving.
pub(crate) struct Incoming {
    pub command: Command,
    pub presentation_context_id: u8,
    /// Set when the request is refused before its data arrives; the data is drained.
    refusal: Option<(Status, String)>,
    part: Option<PartFile>,
}

/// The `.part` file an instance streams into: buffered, written in large chunks.
pub(crate) struct PartFile {
    spool: Arc<Spool>,
    /// Named when first needed: most instances go to the journal and never have a file.
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    total: u64,
    /// SHA-256 of the data set bytes written to the file so far (file path only).
    hasher: crate::provenance::Hasher,
    header_len: usize,
    /// Where the header's stamp gets the digest and sequence number.
    spots: crate::provenance::Placeholders,
}

const FLUSH_AT: usize = 4 * 1024 * 1024;

impl PartFile {
    /// No I/O yet: an instance smaller than `FLUSH_AT` is written, fsynced and moved in one
    /// blocking step when it is complete.
    fn new(
        spool: Arc<Spool>,
        mut header: Vec<u8>,
        spots: crate::provenance::Placeholders,
    ) -> PartFile {
        let total = header.len() as u64;
        let header_len = header.len();
        // most instances of an MR study fit; saves the reallocations while PDUs arrive
        header.reserve(256 * 1024);
        PartFile {
            spool,
            path: None,
            file: None,
            buf: header,
            total,
            hasher: Default::default(),
            header_len,
            spots,
        }
    }

    async fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        self.total += data.len() as u64;
        if self.buf.len() >= FLUSH_AT {
            // streamed: the file path, hashed as it goes (journalled instances are hashed by
            // the materializer, off the acknowledgement path)
            let skip = if self.file.is_none() {
                self.header_len
            } else {
                0
            };
            self.hasher.update(&self.buf[skip..]);
            let (file, buf, path) = (self.file.take(), std::mem::take(&mut self.buf), self.path());
            let (file, buf, r) = tokio::task::spawn_blocking(move || {
                let r = match file {
                    Some(f) => Ok(f),
                    None => std::fs::File::create(&path),
                }
                .and_then(|mut f| f.write_all(&buf).map(|()| f));
                match r {
                    Ok(f) => (Some(f), buf, Ok(())),
                    Err(e) => (None, buf, Err(e)),
                }
            })
            .await
            .expect("no panic");
            self.file = file;
            self.buf = buf;
            self.buf.clear();
            r?;
        }
        Ok(())
    }

    fn path(&mut self) -> PathBuf {
        let spool = &self.spool;
        self.path
            .get_or_insert_with(|| spool.new_part_path())
            .clone()
    }

    fn discard(self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Drop an unacknowledged reception's `.part` file, if one was opened.
fn discard_part(part: Option<PartFile>) {
    if let Some(p) = part {
        p.discard();
    }
}

impl Incoming {
    /// Take one data fragment: appended to the instance unless its C-STORE is refused already
    /// (then the rest is drained). Past `max_object_bytes` the reception is refused with
    /// 0xA700 and its `.part` file dropped; a write error refuses it with its status.
    pub(crate) async fn take(&mut self, data: &[u8], max_object_bytes: u64) {
        if self.refusal.is_some() {
            return;
        }
        let Some(part) = self.part.as_mut() else {
            return;
        };
        if part.total + data.len() as u64 > max_object_bytes {
            self.refusal = Some((
                Status::OutOfResources,
                format!("object larger than the {max_object_bytes} byte limit"),
            ));
            discard_part(self.part.take());
        } else if let Err(e) = part.push(data).await {
            self.refusal = Some(io_status(&e));
            discard_part(self.part.take());
        }
    }

    /// Drop the reception (the association ended before its last fragment).
    pub(crate) fn discard(self) {
        discard_part(self.part);
    }
}

enum Finish {
    /// Durable; `true` when it replaced its sender's earlier copy (a correction).
    Stored(Identity, u64, bool),
    /// The same bytes were staged already: acknowledged, not staged again.
    Identical(Identity),
    /// Another caller's different copy is staged: refused, the staged copy kept.
    Conflict(Identity, Box<CallerId>),
    Refused(Status, String),
}

impl From<Refusal> for Finish {
    fn from(Refusal(status, why): Refusal) -> Finish {
        Finish::Refused(status, why)
    }
}

impl Connection {
    /// Decide whether to take the data set of a C-STORE; open its `.part` file if so.
    pub(crate) fn start_store(
        &self,
        contexts: &[PresentationContextNegotiated],
        pc_id: u8,
        command: Command,
        caller: &audit::Caller,
    ) -> Incoming {
        let mut inc = Incoming {
            command,
            presentation_context_id: pc_id,
            refusal: None,
            part: None,
        };
        let pc = contexts
            .iter()
            .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance);
        let Some(pc) = pc else {
            inc.refusal = Some((
                Status::SopClassNotSupported,
                "no accepted presentation context with this id".into(),
            ));
            return inc;
        };
        if pc.abstract_syntax.trim_end_matches('\0') != inc.command.affected_sop_class_uid {
            inc.refusal = Some((
                Status::SopClassNotSupported,
                "SOP class differs from the presentation context".into(),
            ));
            return inc;
        }
        if self.disk_low() {
            inc.refusal = Some((
                Status::OutOfResources,
                "free disk space below the threshold".into(),
            ));
            return inc;
        }
        let header = match file_header(&inc.command, &pc.transfer_syntax, &self.caller_id(caller)) {
            Ok(h) => h,
            Err(e) => {
                inc.refusal = Some((Status::CannotUnderstand, e.to_string()));
                return inc;
            }
        };
        inc.part = Some(PartFile::new(self.spool.clone(), header.0, header.1));
        inc
    }

    /// The last data fragment has arrived: make the instance durable (or refuse it) and
    /// return the C-STORE-RSP to send.
    pub(crate) async fn complete_store(&self, inc: Incoming, caller: &audit::Caller) -> Vec<u8> {
        let (status, comment) = self
            .finish_store(inc.part, &inc.command, inc.refusal, caller)
            .await;
        crate::dimse::store_response(&inc.command, status, comment.as_deref())
    }

    /// Make the instance durable and tell the assembler; return the status to answer.
    async fn finish_store(
        &self,
        part: Option<PartFile>,
        command: &Command,
        refusal: Option<(Status, String)>,
        caller: &audit::Caller,
    ) -> (Status, Option<String>) {
        let result = match (refusal, part) {
            (Some((status, why)), part) => {
                discard_part(part);
                Finish::Refused(status, why)
            }
            (None, None) => Finish::Refused(Status::ProcessingFailure, "no data received".into()),
            (None, Some(part)) => {
                self.write_and_identify(part, command, self.caller_id(caller))
                    .await
            }
        };
        match result {
            Finish::Stored(id, bytes, replaced) => {
                ScpMetrics::inc(&self.metrics.instances_stored);
                self.metrics.instance_bytes.fetch_add(bytes, Relaxed);
                if replaced {
                    ScpMetrics::inc(&self.metrics.instances_corrected);
                    info!(study = %id.study, sop = %Escaped(&id.sop_instance), calling_ae = %Escaped(&caller.calling_ae), "a re-sent instance with new content replaced its sender's staged copy (correction); the study's quiet period restarts");
                } else {
                    debug!(study = %id.study, series = %id.series, sop = %Escaped(&id.sop_instance), "instance stored");
                }
                // (re)starts the quiet period: a job takes the corrected copy
                self.assembler.instance_stored(&id.study, caller);
                (Status::Success, None)
            }
            Finish::Identical(id) => {
                ScpMetrics::inc(&self.metrics.instances_identical);
                info!(study = %id.study, sop = %Escaped(&id.sop_instance), calling_ae = %Escaped(&caller.calling_ae), "identical copy of a staged instance: acknowledged, not staged again");
                (Status::Success, None)
            }
            Finish::Conflict(id, staged_by) => crate::provenance::refuse_conflict(
                &self.config.audit,
                &self.metrics,
                caller,
                &id.study,
                &id.sop_instance,
                &staged_by,
            ),
            Finish::Refused(status, why) => {
                let counter = match status {
                    Status::OutOfResources => &self.metrics.store_failed_out_of_resources,
                    Status::DataSetMismatch | Status::SopClassNotSupported => {
                        &self.metrics.store_failed_mismatch
                    }
                    Status::CannotUnderstand => &self.metrics.store_failed_cannot_understand,
                    _ => &self.metrics.store_failed_processing,
                };
                ScpMetrics::inc(counter);
                warn!(sop = %Escaped(&command.affected_sop_instance_uid), status = format!("0x{:04X}", status.code()), reason = %Escaped(&why), "C-STORE refused");
                (status, Some(why))
            }
        }
    }

    /// One blocking step: identify the instance (from memory when it was small enough to stay
    /// there), check it against the command, write and fsync it, move it into its study
    /// folder and fsync the folder. The spool's read lock is held for the move so the study
    /// folder cannot be frozen for emission halfway (only for the move: a re-sent instance may
    /// wait for the journal materializer, which needs that lock too, while an emission waits
    /// for it).
    async fn write_and_identify(
        &self,
        mut part: PartFile,
        command: &Command,
        caller: CallerId,
    ) -> Finish {
        let (sop_instance, sop_class) = (
            command.affected_sop_instance_uid.clone(),
            command.affected_sop_class_uid.clone(),
        );
        let total = part.total;
        if part.file.is_none() {
            if let Some(journal) = &self.journal {
                if total <= journal.max_payload() {
                    // no study folder is touched here: the materializer takes the lock
                    return self
                        .journal_instance(journal.clone(), part, sop_instance, sop_class, caller)
                        .await;
                }
            }
        }
        let spool = self.spool.clone();
        let limits = crate::guard::instance_limits(self.config.max_object_bytes);
        let path = part.path();
        let registry = self.registry.clone();
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            let PartFile {
                file,
                buf,
                mut hasher,
                header_len,
                spots,
                ..
            } = part;
            let streamed = file.is_some();
            hasher.update(&buf[if streamed { 0 } else { header_len }..]);
            let mut claimed = None;
            // Err: the answer without storing (a refusal, or an identical or conflicting copy)
            let result = (|| -> Result<Finish, Finish> {
                let in_memory = if streamed {
                    None
                } else {
                    Some(identify(Source::Bytes(&buf), &limits)?)
                };
                let mut f = match file {
                    Some(f) => f,
                    None => std::fs::File::create(&path).map_err(|e| refused_io(&e))?,
                };
                f.write_all(&buf).map_err(|e| refused_io(&e))?;
                let id = match in_memory {
                    Some(id) => id,
                    None => identify(Source::File(&path), &limits)?,
                };
                let sop = checked_sop(&id, &sop_instance, &sop_class)?;
                let digest = hasher.finish();
                let (claim, _) = crate::provenance::claim(
                    &registry,
                    &sop,
                    &id.study,
                    &caller,
                    Some(digest),
                    || digest,
                    || nudge(&journal),
                );
                // not stored (identical, conflict, busy): the .part file is removed below
                let (id, seq, replaced) = decide(claim, id)?;
                claimed = Some((sop.clone(), seq));
                // the stamp goes into the header, which may be on disk already
                for (at, bytes) in spots.fill(Some(&digest), seq) {
                    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, at as u64)
                        .map_err(|e| refused_io(&e))?;
                }
                f.sync_all().map_err(|e| refused_io(&e))?;
                drop(f);
                {
                    let _folders = spool.blocking_read_folders();
                    spool
                        .commit(&path, &id.study, &id.series, &sop)
                        .map_err(|e| refused_io(&e))?;
                }
                registry.commit(&sop, seq);
                Ok(Finish::Stored(id, total, replaced))
            })();
            match result {
                Ok(stored) => stored,
                Err(refused) => {
                    if let Some((sop, seq)) = claimed {
                        registry.abort(&sop, seq);
                    }
                    let _ = std::fs::remove_file(&path);
                    refused
                }
            }
        })
        .await
        .expect("no panic")
    }
    /// The journal path for an instance held in memory: identify and check it, append it to
    /// this association's journal segment and fdatasync; the materializer moves it into its
    /// study folder later.
    async fn journal_instance(
        &self,
        journal: Arc<Journal>,
        part: PartFile,
        sop_instance: String,
        sop_class: String,
        caller: CallerId,
    ) -> Finish {
        let writer = self.writer.clone();
        let registry = self.registry.clone();
        let total = part.total;
        let limits = crate::guard::instance_limits(self.config.max_object_bytes);
        let work = move || {
            let id = match identify(Source::Bytes(&part.buf), &limits) {
                Ok(id) => id,
                Err(refused) => return refused.into(),
            };
            let sop = match checked_sop(&id, &sop_instance, &sop_class) {
                Ok(u) => u,
                Err(refused) => return refused.into(),
            };
            let PartFile {
                mut buf,
                header_len,
                spots,
                ..
            } = part;
            // the digest is computed here only for a UID already staged; otherwise the
            // materializer does it off the acknowledgement path
            let (claim, digest) = crate::provenance::claim(
                &registry,
                &sop,
                &id.study,
                &caller,
                None,
                || crate::provenance::digest(&buf[header_len..]),
                || journal.nudge(),
            );
            let (id, seq, replaced) = match decide(claim, id) {
                Ok(store) => store,
                Err(answer) => return answer,
            };
            spots.fill_in(&mut buf, digest.as_ref(), seq);
            let record = RecordedInstance {
                study: id.study.clone(),
                series: id.series.clone(),
                sop: sop.clone(),
            };
            let mut writer = writer.lock().unwrap();
            let writer = writer.get_or_insert_with(|| journal.writer());
            match writer.append(record, buf) {
                Ok(()) => {
                    registry.commit(&sop, seq);
                    Finish::Stored(id, total, replaced)
                }
                Err(e) => {
                    registry.abort(&sop, seq);
                    refused_io(&e)
                }
            }
        };
        // The peer waits for this status and nothing else of this association can run
        // meanwhile, so block this worker rather than hand the work to the blocking pool and
        // back (two thread hand-offs per instance; the gain was within the noise of
        // bench/ingest on the 2-core machine, the hand-offs were visible in strace).
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(work)
        } else {
            tokio::task::spawn_blocking(work).await.expect("no panic")
        }
    }
}

/// A claim's outcome: store the instance (with its sequence number; `true` if it replaces its
/// sender's copy), or the answer without storing it.
fn decide(claim: Claim, id: Identity) -> Result<(Identity, u64, bool), Finish> {
    match claim {
        Claim::Store { seq, replaces } => Ok((id, seq, replaces)),
        Claim::Identical => Err(Finish::Identical(id)),
        Claim::Conflict { original, .. } => Err(Finish::Conflict(id, Box::new(original))),
        Claim::Busy | Claim::NeedDigest => Err(busy()),
    }
}

/// Ask the journal materializer (if any) to compute pending digests now.
fn nudge(journal: &Option<Arc<Journal>>) {
    if let Some(j) = journal {
        j.nudge();
    }
}

/// Another association kept the SOP Instance UID claimed for too long.
fn busy() -> Finish {
    let (s, w) = crate::provenance::busy();
    Finish::Refused(s, w)
}

fn refused_io(e: &std::io::Error) -> Finish {
    let (s, w) = io_status(e);
    Finish::Refused(s, w)
}

pub(crate) fn io_status(e: &std::io::Error) -> (Status, String) {
    if staging::is_out_of_space(e) {
        (Status::OutOfResources, "disk full or over quota".into())
    } else {
        (
            Status::ProcessingFailure,
            format!("local I/O error: {}", e.kind()),
        )
    }
}
