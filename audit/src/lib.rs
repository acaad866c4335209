//! segnode's audit trail: a JSON-lines file that answers "who sent study X, what became of its
//! job, and where did its result go", in the spirit of IHE ATNA (who, what, when, from where, with
//! what outcome) without its syslog/XML transport.
//!
//! One line per [`Event`]: `{"ts":"2026-11-30T12:00:00.123Z","event":"association_accepted",...}`.
//! The schema is the serde form of [`Record`] (`ts`, `node`, then the event's fields; see
//! docs/AUDIT.md). No patient names or IDs are ever recorded: studies are named by Study Instance
//! UID, callers by AE title, address and TLS certificate subject. Peer-supplied text is stored as
//! JSON strings, so a newline or escape sequence in an AE title cannot forge a line.
//!
//! Durability: each event is written to the file at once (one `write` of one line, the file
//! opened for append) and fdatasync'ed by a background thread at most once per
//! [`SYNC_INTERVAL`] while anything is unsynced, and on [`AuditLog::sync`] / drop. A crash loses
//! at most the last second of audit lines, never a study (the spool's own durability is
//! separate). A write error is reported through `tracing` and counted ([`AuditLog::errors`]);
//! it does not stop the node from receiving studies: the clinical flow is not held hostage by the
//! audit disk (documented decision; an operator alerts on the count).
//!
//! Several processes (a listener task and worker tasks at scale) each write their own file (or
//! standard output, `-`, for a log shipper such as CloudWatch); [`read_records`] merges files.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often unsynced audit lines are forced to disk.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Lines longer than this are skipped when reading (our own lines are under 4 KiB).
pub const MAX_LINE: usize = 64 * 1024;

/// Who called: the DICOM peer as the listener saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub calling_ae: String,
    /// `address:port` of the TCP peer.
    pub peer: String,
    /// Subject of the client certificate (mutual TLS), e.g. `CN=pacs1,O=Hospital`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_subject: Option<String>,
}

/// What happened. The `event` field of a line names the variant (snake_case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A process started with this configuration (no secrets, no file contents).
    ConfigLoaded {
        /// `serve`, `scp`, `worker`, ...
        role: String,
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ae_title: Option<String>,
        /// e.g. `dicom 127.0.0.1:11112`, `dicom-tls 0.0.0.0:2762 (client certificates required)`.
        #[serde(default)]
        listeners: Vec<String>,
        #[serde(default)]
        allowlist_entries: usize,
        /// `AET@HOST:PORT` (with `+tls` where TLS is required) or a DICOMweb URL, no credentials.
        #[serde(default)]
        destinations: Vec<String>,
    },
    AssociationAccepted {
        #[serde(flatten)]
        caller: Caller,
        called_ae: String,
    },
    AssociationRejected {
        #[serde(flatten)]
        caller: Caller,
        called_ae: String,
        reason: String,
    },
    /// A study was complete (quiet period over) and handed to a job.
    StudyReceived {
        study_uid: String,
        instances: u64,
        bytes: u64,
        /// Everyone who sent instances of it (usually one).
        callers: Vec<Caller>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
    },
    /// A worker produced the result of a job.
    JobDone {
        study_uid: String,
        job_id: String,
        /// SOP Instance UID of the DICOM-SEG written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_uid: Option<String>,
        seconds: f64,
    },
    /// A job that will not be retried, and why.
    JobDeadLettered {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        study_uid: Option<String>,
        job_id: String,
        reason: String,
    },
    /// A C-STORE refused because another caller's different copy of the same SOP Instance UID
    /// is staged (the staged copy is kept).
    InstanceConflict {
        #[serde(flatten)]
        caller: Caller,
        study_uid: String,
        sop_instance_uid: String,
        /// Who sent the staged copy (`peer`: its IP address; the port is not part of a caller).
        staged_by: Caller,
        reason: String,
    },
    /// One delivery attempt's outcome for a result.
    ResultDelivered {
        study_uid: String,
        job_id: String,
        /// `AET@HOST:PORT` or a URL (no credentials).
        destination: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_uid: Option<String>,
        /// `success`, or the failure as the node logged it.
        status: String,
    },
}

impl Event {
    /// The study this event is about, if any.
    pub fn study_uid(&self) -> Option<&str> {
        match self {
            Event::StudyReceived { study_uid, .. }
            | Event::JobDone { study_uid, .. }
            | Event::ResultDelivered { study_uid, .. }
            | Event::InstanceConflict { study_uid, .. } => Some(study_uid),
            Event::JobDeadLettered { study_uid, .. } => study_uid.as_deref(),
            _ => None,
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, RFC 3339 with milliseconds.
    pub ts: String,
    /// The host name of the process that wrote it (which task, at scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("opening the audit log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the audit log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

enum Sink {
    File(File),
    Stdout,
}

struct Inner {
    sink: Mutex<Sink>,
    dirty: AtomicBool,
    errors: AtomicU64,
    node: Option<String>,
}

/// The audit log of one process. Cheap to clone; [`AuditLog::disabled`] records nothing.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.is_some() {
            "AuditLog(on)"
        } else {
            "AuditLog(off)"
        })
    }
}

impl AuditLog {
    /// Records nothing (no `--audit-log`).
    pub fn disabled() -> Self {
        AuditLog { inner: None }
    }

    /// Appends to `path` (created with mode 0640 if missing), or writes to standard output for
    /// `-`. `node` names this process in every line (e.g. the host name).
    pub fn open(path: &Path, node: Option<String>) -> Result<Self, AuditError> {
        let sink = if path == Path::new("-") {
            Sink::Stdout
        } else {
            let mut options = OpenOptions::new();
            options.append(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o640);
            }
            Sink::File(options.open(path).map_err(|source| AuditError::Open {
                path: path.to_path_buf(),
                source,
            })?)
        };
        let inner = Arc::new(Inner {
            sink: Mutex::new(sink),
            dirty: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            node,
        });
        if matches!(
            *inner.sink.lock().unwrap_or_else(|e| e.into_inner()),
            Sink::File(_)
        ) {
            spawn_syncer(Arc::downgrade(&inner));
        }
        Ok(AuditLog { inner: Some(inner) })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Writes one line for `event` now (the fdatasync follows within [`SYNC_INTERVAL`]).
    pub fn record(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let record = Record {
            ts: now_rfc3339(),
            node: inner.node.clone(),
            event,
        };
        let mut line = match serde_json::to_vec(&record) {
            Ok(l) => l,
            Err(e) => {
                inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit record not serialisable");
                return;
            }
        };
        line.push(b'\n');
        let result = match &mut *inner.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            Sink::File(f) => f.write_all(&line),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            }
        };
        match result {
            Ok(()) => inner.dirty.store(true, Ordering::Release),
            Err(e) => {
                let n = inner.errors.fetch_add(1, Ordering::Relaxed) + 1;
                // Every error at first, then one in a thousand: a full disk must not flood.
                if n <= 10 || n % 1000 == 0 {
                    tracing::error!(error = %e, errors = n, "audit log write failed");
                }
            }
        }
    }

    /// Forces everything written so far to disk.
    pub fn sync(&self) -> io::Result<()> {
        match &self.inner {
            Some(inner) => inner.sync(),
            None => Ok(()),
        }
    }

    /// Lines that could not be written since start.
    pub fn errors(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.errors.load(Ordering::Relaxed))
    }
}

impl Inner {
    fn sync(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // Sync a second handle of the same file, so writers are not held during the flush.
        let handle = match &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            Sink::File(f) => f.try_clone(),
            Sink::Stdout => return Ok(()),
        };
        let result = handle.and_then(|f| f.sync_data());
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "audit log: final sync failed");
        }
    }
}

fn spawn_syncer(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("audit-sync".into())
        .spawn(move || loop {
            std::thread::sleep(SYNC_INTERVAL);
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = inner.sync() {
                inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit log sync failed");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "audit log: no sync thread; lines are synced on close only");
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What [`read_records`] found: the records in time order, and lines it could not read.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<Record>,
    /// Lines that were too long, not UTF-8, or not a record (a torn last line after a crash).
    pub unreadable: usize,
}

/// Reads and merges audit logs (RFC 3339 UTC timestamps sort as text).
pub fn read_records(paths: &[PathBuf]) -> Result<Records, AuditError> {
    let mut out = Records::default();
    for path in paths {
        let err = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(err)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            // Bounded: read at most MAX_LINE + 1 bytes of a line, then skip to its end.
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(err)?;
            if n == 0 {
                break;
            }
            // More than MAX_LINE bytes before a newline: over-long; skip the rest of it.
            if line.len() > MAX_LINE && !line.ends_with(b"\n") {
                out.unreadable += 1;
                skip_line(&mut reader).map_err(err)?;
                continue;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Record>(text) {
                Ok(r) => out.records.push(r),
                Err(_) => out.unreadable += 1,
            }
        }
    }
    out.records.sort_by(|a, b| a.ts.cmp(&b.ts));
    Ok(out)
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

/// The answer to "who sent study X and where did its result go".
#[derive(Debug, Default, Serialize)]
pub struct StudyTrail {
    pub study_uid: String,
    /// Every record about the study, in time order.
    pub records: Vec<Record>,
    /// Distinct callers that sent instances of it.
    pub senders: Vec<Caller>,
    /// `(destination, status)` of every delivery attempt, in order.
    pub deliveries: Vec<(String, String)>,
}

/// The records about `study_uid`, with its senders and deliveries pulled out.
pub fn study_trail(records: &[Record], study_uid: &str) -> StudyTrail {
    let mut trail = StudyTrail {
        study_uid: study_uid.to_string(),
        ..Default::default()
    };
    for r in records
        .iter()
        .filter(|r| r.event.study_uid() == Some(study_uid))
    {
        match &r.event {
            Event::StudyReceived { callers, .. } => {
                for c in callers {
                    if !trail.senders.contains(c) {
                        trail.senders.push(c.clone());
                    }
                }
            }
            Event::ResultDelivered {
                destination,
                status,
                ..
            } => trail.deliveries.push((destination.clone(), status.clone())),
            _ => {}
        }
        trail.records.push(r.clone());
    }
    trail
}
