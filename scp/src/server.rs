//! The listener: association policy, then C-ECHO and durable C-STORE on each association.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::OpenFileOptions;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    PresentationContextResultReason, UserIdentity,
};
use dicom_ul::ServerAssociationOptions;
use staging::logsafe::RateLimited;
use staging::{Escaped, JobQueue, ObjectStore, Uid};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::assembler::Assembler;
use crate::config::ScpConfig;
use crate::dimse::{self, Command, Status};
use crate::disk;
use crate::journal::{Journal, JournalWriter, RecordedInstance};
use crate::metrics::ScpMetrics;
use crate::provenance::{CallerId, Claim, Registry};
use crate::sop::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION};
use crate::spool::Spool;

#[derive(Debug, thiserror::Error)]
pub enum ScpError {
    #[error("cannot listen on {addr}: {source} (is another node or storescp using the port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the spool at {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid AE title {0:?}: 1 to 16 printable ASCII characters")]
    AeTitle(String),
    #[error("no listener: plain TCP is off and no TLS listener is configured")]
    NoListener,
}

/// The DICOM listener. `bind` recovers the spool; `serve` runs until shutdown.
pub struct Scp {
    config: Arc<ScpConfig>,
    /// Plain TCP (unless turned off).
    listener: Option<TcpListener>,
    /// DICOM TLS, if configured.
    tls_listener: Option<TcpListener>,
    spool: Arc<Spool>,
    journal: Option<Arc<Journal>>,
    assembler: Arc<Assembler>,
    metrics: Arc<ScpMetrics>,
    slots: Arc<Semaphore>,
    admission: Arc<crate::admission::Admission>,
    registry: Arc<Registry>,
}

/// Repeated accept failures and refused connections are logged at most once a second each.
static ACCEPT_FAILED_LOG: RateLimited = RateLimited::new(Duration::from_secs(1));
static NOT_ADMITTED_LOG: RateLimited = RateLimited::new(Duration::from_secs(1));

impl Scp {
    pub async fn bind(
        config: ScpConfig,
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn JobQueue>,
    ) -> Result<Scp, ScpError> {
        if !crate::config::valid_ae_title(&config.ae_title) {
            return Err(ScpError::AeTitle(config.ae_title));
        }
        let (spool, discarded) =
            Spool::open(&config.spool_dir).map_err(|source| ScpError::Spool {
                path: config.spool_dir.clone(),
                source,
            })?;
        if discarded > 0 {
            info!(
                discarded,
                "discarded partial receptions that were never acknowledged"
            );
        }
        let spool = Arc::new(spool);
        let journal = if config.journal_segment_bytes > 0 {
            let (journal, recovery) = Journal::open(spool.clone(), config.journal_segment_bytes)
                .map_err(|source| ScpError::Spool {
                    path: config.spool_dir.join(crate::journal::JOURNAL_DIR),
                    source,
                })?;
            if recovery.instances > 0 {
                info!(
                    instances = recovery.instances,
                    segments = recovery.segments,
                    "recovered acknowledged instances from the ingest journal"
                );
            }
            Some(journal)
        } else {
            None
        };
        // After the journal's replay: every acknowledged instance is in its folder now.
        let (registry, enforced) = Registry::rebuild(&spool, crate::provenance::EMITTED_WINDOW)
            .map_err(|source| ScpError::Spool {
                path: config.spool_dir.clone(),
                source,
            })?;
        if enforced > 0 {
            info!(
                instances = enforced,
                "recovered who sent the staged and recently emitted instances"
            );
        }
        let registry = Arc::new(registry);
        if let Some(journal) = &journal {
            journal.set_registry(registry.clone());
        }
        let metrics = Arc::new(ScpMetrics {
            journal_pending_bytes: journal
                .as_ref()
                .map(|j| j.pending_bytes_counter())
                .unwrap_or_default(),
            journal_stuck_instances: journal
                .as_ref()
                .map(|j| j.stuck_instances_counter())
                .unwrap_or_default(),
            ..ScpMetrics::default()
        });
        let assembler = Assembler::recover(
            spool.clone(),
            journal.clone(),
            store,
            queue,
            metrics.clone(),
            config.quiet_period,
            config.audit.clone(),
            registry.clone(),
        )
        .map_err(|source| ScpError::Spool {
            path: config.spool_dir.clone(),
            source,
        })?;
        if !config.plain && config.tls.is_none() {
            return Err(ScpError::NoListener);
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ScpError::Bind { addr, source })
        };
        let listener = match config.plain {
            true => Some(bind(config.bind).await?),
            false => None,
        };
        let tls_listener = match &config.tls {
            Some(t) => Some(bind(t.bind).await?),
            None => None,
        };
        let slots = Arc::new(Semaphore::new(config.max_associations));
        let admission = crate::admission::Admission::new(
            config.max_pending_associations,
            config.max_pending_per_peer,
        );
        Ok(Scp {
            config: Arc::new(config),
            listener,
            tls_listener,
            spool,
            journal,
            assembler,
            metrics,
            slots,
            admission,
            registry,
        })
    }

    /// The plain TCP listener's address (the TLS listener's when plain TCP is off).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .as_ref()
            .or(self.tls_listener.as_ref())
            .expect("bind checked that one listener exists")
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn metrics(&self) -> Arc<ScpMetrics> {
        self.metrics.clone()
    }

    pub fn assembler(&self) -> Arc<Assembler> {
        self.assembler.clone()
    }

    /// Accept associations until `shutdown` resolves, then stop accepting, give open
    /// associations up to 10 s to finish, and return. Spooled studies stay for the next run.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let assembler_task = tokio::spawn(self.assembler.clone().run(stop_rx));
        if let Some(l) = &self.listener {
            info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), ae_title = %self.config.ae_title, "DICOM listener ready");
        }
        if let (Some(l), Some(t)) = (&self.tls_listener, &self.config.tls) {
            info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), ae_title = %self.config.ae_title, client_certificates_required = t.client_certificates_required, "DICOM TLS listener ready");
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept(&self.listener, &self.tls_listener) => match accepted {
                    Ok((socket, peer, on_tls)) => {
                        let tls = if on_tls {
                            self.config.tls.as_ref().map(|t| t.config.clone())
                        } else {
                            None
                        };
                        let ticket = match self.admission.admit(peer.ip()) {
                            Ok(t) => t,
                            Err(refusal) => {
                                ScpMetrics::inc(&self.metrics.associations_rejected_limit);
                                if let Some(suppressed) = NOT_ADMITTED_LOG.allow() {
                                    warn!(peer = %peer, ?refusal, suppressed, "connection closed: too many connections without an association");
                                }
                                drop(socket);
                                continue;
                            }
                        };
                        let conn = Connection {
                            config: self.config.clone(),
                            spool: self.spool.clone(),
                            journal: self.journal.clone(),
                            writer: Arc::new(std::sync::Mutex::new(None)),
                            assembler: self.assembler.clone(),
                            metrics: self.metrics.clone(),
                            registry: self.registry.clone(),
                            peer,
                        };
                        let slots = self.slots.clone();
                        tokio::spawn(async move { conn.handle(socket, slots, ticket, tls).await });
                    }
                    Err(e) => {
                        if let Some(suppressed) = ACCEPT_FAILED_LOG.allow() {
                            warn!(error = %e, suppressed, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        info!("shutting down: no new associations");
        let all = self.config.max_associations as u32;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
        let _ = stop_tx.send(true);
        let _ = assembler_task.await;
        if !self.config.drain_time.is_zero() {
            self.assembler.drain(self.config.drain_time).await;
        }
        if let Some(journal) = self.journal {
            // Materialize what is pending now rather than at the next start.
            let _ = tokio::task::spawn_blocking(move || journal.shutdown()).await;
        }
    }
}

/// The next connection on either listener (`true`: on the TLS one); a missing listener never
/// yields.
async fn accept(
    plain: &Option<TcpListener>,
    tls: &Option<TcpListener>,
) -> std::io::Result<(TcpStream, SocketAddr, bool)> {
    async fn on(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
        match l {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        r = on(plain) => r.map(|(s, a)| (s, a, false)),
        r = on(tls) => r.map(|(s, a)| (s, a, true)),
    }
}

/// Called AE must be ours; calling AE (and host) must be on the allowlist if there is one.
/// A refusal is recorded in the audit trail with its reason.
struct Policy {
    config: Arc<ScpConfig>,
    peer: SocketAddr,
}

impl Policy {
    fn refuse(
        &self,
        calling_ae: &str,
        called_ae: &str,
        reason: AssociationRJServiceUserReason,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let why = match reason {
            AssociationRJServiceUserReason::CalledAETitleNotRecognized => {
                "called AE title not recognised"
            }
            _ => "calling AE title (and host) not on the allowlist",
        };
        self.config.audit.record(audit::Event::AssociationRejected {
            caller: audit::Caller {
                calling_ae: calling_ae.trim().to_string(),
                peer: self.peer.to_string(),
                tls_subject: None,
            },
            called_ae: called_ae.trim().to_string(),
            reason: why.into(),
        });
        Err(reason)
    }
}

impl AccessControl for Policy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return self.refuse(
                calling_ae_title,
                called_ae_title,
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            );
        }
        let allowed = &self.config.allowed_callers;
        if !allowed.is_empty()
            && !allowed
                .iter()
                .any(|a| a.admits(calling_ae_title, self.peer.ip()))
        {
            return self.refuse(
                calling_ae_title,
                called_ae_title,
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            );
        }
        Ok(())
    }
}

struct Connection {
    config: Arc<ScpConfig>,
    spool: Arc<Spool>,
    journal: Option<Arc<Journal>>,
    /// This association's journal writer, taken at its first journalled instance.
    writer: Arc<std::sync::Mutex<Option<JournalWriter>>>,
    assembler: Arc<Assembler>,
    metrics: Arc<ScpMetrics>,
    /// Who sent the instances in the spool (re-sent instances: identical, correction, conflict).
    registry: Arc<Registry>,
    peer: SocketAddr,
}

/// A C-STORE whose data set is arriving.
struct Incoming {
    command: Command,
    presentation_context_id: u8,
    /// Set when the request is refused before its data arrives; the data is drained.
    refusal: Option<(Status, String)>,
    part: Option<PartFile>,
}

/// The `.part` file an instance streams into: buffered, written in large chunks.
struct PartFile {
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

/// What the data set says about itself, read back from the written file.
struct Identity {
    study: Uid,
    series: Uid,
    sop_instance: String,
    sop_class: String,
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

fn reject_pdu(result: AssociationRJResult, source: AssociationRJSource) -> Pdu {
    Pdu::AssociationRJ(AssociationRJ { result, source })
}

/// What an association runs over: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

impl Connection {
    async fn handle(
        self,
        socket: TcpStream,
        slots: Arc<Semaphore>,
        ticket: crate::admission::Ticket,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let _ = socket.set_nodelay(true);
        // Refuse early when every slot is taken; the slot itself is taken after the AC.
        if slots.available_permits() == 0 {
            {
                ScpMetrics::inc(&self.metrics.associations_rejected_limit);
                warn!(peer = %self.peer, limit = self.config.max_associations, "association refused: too many concurrent associations");
                self.refuse(
                    socket,
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                    tls.is_some(),
                )
                .await;
                return;
            }
        }
        if self.disk_low() {
            ScpMetrics::inc(&self.metrics.associations_rejected_disk);
            warn!(peer = %self.peer, "association refused: free disk space below the configured threshold");
            self.refuse(
                socket,
                AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
                tls.is_some(),
            )
            .await;
            return;
        }
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(Policy {
                config: self.config.clone(),
                peer: self.peer,
            })
            .ae_title(self.config.ae_title.as_str())
            .max_pdu_length(self.config.max_pdu_length)
            .strict(true)
            .read_timeout(self.config.idle_timeout)
            .write_timeout(self.config.idle_timeout)
            .with_abstract_syntax(VERIFICATION);
        for sop in &self.config.sop_classes {
            options = options.with_abstract_syntax(sop.as_str());
        }
        for ts in &self.config.transfer_syntaxes {
            options = options.with_transfer_syntax(ts.as_str());
        }
        match tls {
            None => {
                let established = tokio::time::timeout(
                    self.config.artim_timeout,
                    options.establish_async(socket),
                )
                .await;
                if let Some(assoc) = self.established(established) {
                    self.run(assoc, slots, ticket, None).await;
                }
            }
            Some(config) => {
                // The handshake is inside ARTIM too: a plaintext or silent client on the TLS
                // port is closed when it runs out, holding no association slot.
                let options = options.tls_config(config);
                let established = tokio::time::timeout(
                    self.config.artim_timeout,
                    options.establish_tls_async(socket),
                )
                .await;
                if let Some(mut assoc) = self.established(established) {
                    let subject = assoc
                        .inner_stream()
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|cert| crate::tls::certificate_subject(cert));
                    self.run(assoc, slots, ticket, Some(subject)).await;
                }
            }
        }
    }

    /// The association if negotiation succeeded within ARTIM; otherwise counted and logged.
    fn established<S>(
        &self,
        result: Result<
            Result<dicom_ul::association::AsyncServerAssociation<S>, dicom_ul::association::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Option<dicom_ul::association::AsyncServerAssociation<S>> {
        match result {
            Ok(Ok(a)) => Some(a),
            Ok(Err(e)) => {
                let text = e.to_string();
                // dicom-ul answers a request our policy (or the called AE title, application
                // context or presentation contexts) refuses with an A-ASSOCIATE-RJ: its variant.
                if matches!(e, dicom_ul::association::Error::Rejected { .. }) {
                    ScpMetrics::inc(&self.metrics.associations_rejected_ae);
                } else {
                    ScpMetrics::inc(&self.metrics.associations_failed);
                }
                warn!(peer = %self.peer, error = %Escaped(&text), "association not established");
                None
            }
            Err(_) => {
                ScpMetrics::inc(&self.metrics.associations_failed);
                warn!(peer = %self.peer, timeout = ?self.config.artim_timeout, "association request not completed in time (ARTIM); connection closed");
                None
            }
        }
    }

    /// An established association, to its end. `tls`: `Some` on the TLS port, with the client
    /// certificate's subject if one was presented.
    async fn run<S: Stream>(
        &self,
        mut assoc: dicom_ul::association::AsyncServerAssociation<S>,
        slots: Arc<Semaphore>,
        ticket: crate::admission::Ticket,
        tls: Option<Option<crate::tls::Subject>>,
    ) {
        drop(ticket);
        let Ok(permit) = slots.try_acquire_owned() else {
            // another association took the last slot while this one negotiated
            ScpMetrics::inc(&self.metrics.associations_rejected_limit);
            warn!(peer = %self.peer, limit = self.config.max_associations, "association aborted: too many concurrent associations");
            let _ = assoc.abort().await;
            return;
        };
        let calling_ae = {
            use dicom_ul::association::Association;
            assoc.peer_ae_title().trim().to_string()
        };
        let subject = tls.clone().flatten();
        if let Some(why) = self.certificate_refusal(&calling_ae, subject.as_ref()) {
            ScpMetrics::inc(&self.metrics.associations_rejected_ae);
            warn!(peer = %self.peer, calling_ae = %Escaped(&calling_ae), subject = %Escaped(subject.as_ref().map_or("-", |s| s.text.as_str())), reason = why, "association aborted: client certificate not allowed for this caller");
            self.config.audit.record(audit::Event::AssociationRejected {
                caller: audit::Caller {
                    calling_ae,
                    peer: self.peer.to_string(),
                    tls_subject: subject.map(|s| s.text),
                },
                called_ae: self.config.ae_title.clone(),
                reason: why.into(),
            });
            let _ = assoc.abort().await;
            return;
        }
        ScpMetrics::inc(&self.metrics.associations_accepted);
        self.metrics.associations_active.fetch_add(1, Relaxed);
        let accepted = assoc
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .count();
        info!(peer = %self.peer, calling_ae = %Escaped(&calling_ae), accepted_contexts = accepted, "association accepted");
        let caller = audit::Caller {
            calling_ae,
            peer: self.peer.to_string(),
            tls_subject: subject.map(|s| s.text),
        };
        self.config.audit.record(audit::Event::AssociationAccepted {
            caller: caller.clone(),
            called_ae: self.config.ae_title.clone(),
        });

        let outcome = self.serve_association(&mut assoc, &caller).await;
        match outcome {
            End::Released => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                debug!(peer = %self.peer, "association released");
            }
            End::PeerAborted => debug!(peer = %self.peer, "association aborted by the peer"),
            End::Abort(reason) => {
                warn!(peer = %self.peer, reason = %Escaped(&reason), "aborting association");
                let _ = assoc.abort().await;
            }
        }
        self.metrics.associations_active.fetch_sub(1, Relaxed);
        drop(permit);
    }

    /// On the TLS port: why this caller's certificate is not acceptable, if it is not. The
    /// allowlist entries that admit the calling AE and address decide: when every one of them
    /// names a certificate common name (`AE@HOST#CN`), the client must have presented a
    /// certificate with one of those names. Checked once the association is negotiated (the
    /// access-control hook runs inside dicom-ul, before the TLS session is visible), so a refused
    /// caller sees an A-ABORT right after the A-ASSOCIATE-AC, before any data is taken.
    fn certificate_refusal(
        &self,
        calling_ae: &str,
        subject: Option<&crate::tls::Subject>,
    ) -> Option<&'static str> {
        let allowed = &self.config.allowed_callers;
        if allowed.is_empty() {
            return None;
        }
        let matching: Vec<&crate::config::AllowedCaller> = allowed
            .iter()
            .filter(|a| a.admits(calling_ae, self.peer.ip()))
            .collect();
        if matching.iter().any(|a| a.common_name.is_none()) {
            return None;
        }
        let cn = subject.and_then(|s| s.common_name.as_deref());
        match cn {
            None => Some("no client certificate common name, and the allowlist requires one"),
            Some(cn)
                if matching
                    .iter()
                    .any(|a| a.common_name.as_deref() == Some(cn)) =>
            {
                None
            }
            Some(_) => Some("client certificate common name not on the allowlist for this caller"),
        }
    }

    /// Who this association's caller is, for the instances it sends.
    fn caller_id(&self, caller: &audit::Caller) -> CallerId {
        CallerId::new(
            &caller.calling_ae,
            self.peer.ip(),
            caller.tls_subject.as_deref(),
        )
    }

    fn disk_low(&self) -> bool {
        match disk::free_bytes(self.spool.root()) {
            Ok(free) => free < self.config.min_free_disk_bytes,
            Err(e) => {
                warn!(error = %e, "cannot read free disk space; treating it as low");
                true
            }
        }
    }

    /// Read the A-ASSOCIATE-RQ (within ARTIM) and answer with a transient rejection.
    /// On the TLS port the connection is closed instead: an A-ASSOCIATE-RJ would need the
    /// handshake first, which is work a refused (overloaded) listener should not do.
    async fn refuse(
        &self,
        mut socket: TcpStream,
        reason: AssociationRJServiceProviderPresentationReason,
        tls: bool,
    ) {
        use tokio::io::AsyncWriteExt;
        if tls {
            let _ = socket.shutdown().await;
            return;
        }
        let mut buf = bytes::BytesMut::new();
        let read = dicom_ul::association::read_pdu_from_wire_async(
            &mut socket,
            &mut buf,
            self.config.max_pdu_length,
            true,
        );
        if let Ok(Ok(Pdu::AssociationRQ(rq))) =
            tokio::time::timeout(self.config.artim_timeout, read).await
        {
            let why = match reason {
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded => {
                    "too many concurrent associations"
                }
                _ => "free disk space below the threshold",
            };
            self.config.audit.record(audit::Event::AssociationRejected {
                caller: audit::Caller {
                    calling_ae: rq.calling_ae_title.trim().to_string(),
                    peer: self.peer.to_string(),
                    tls_subject: None,
                },
                called_ae: rq.called_ae_title.trim().to_string(),
                reason: why.into(),
            });
            let mut out = Vec::new();
            let pdu = reject_pdu(
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(reason),
            );
            if dicom_ul::pdu::write_pdu(&mut out, &pdu).is_ok() {
                let _ = socket.write_all(&out).await;
            }
        }
        let _ = socket.shutdown().await;
    }

    async fn serve_association<S: Stream>(
        &self,
        assoc: &mut dicom_ul::association::AsyncServerAssociation<S>,
        caller: &audit::Caller,
    ) -> End {
        let mut command_buf: Vec<u8> = Vec::new();
        let mut incoming: Option<Incoming> = None;
        loop {
            let pdu = match assoc.receive().await {
                Ok(pdu) => pdu,
                Err(e) => {
                    if let Some(inc) = incoming.take() {
                        discard_part(inc.part);
                    }
                    return End::Abort(format!("receive failed or idle timeout: {e}"));
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        let PDataValue {
                            presentation_context_id,
                            value_type,
                            is_last,
                            data,
                        } = pdv;
                        match value_type {
                            PDataValueType::Command => {
                                if incoming.is_some() {
                                    return End::Abort(
                                        "command fragment while a data set was still arriving"
                                            .into(),
                                    );
                                }
                                if command_buf.len() + data.len() > crate::guard::MAX_COMMAND_BYTES
                                {
                                    return End::Abort(format!(
                                        "command set over the {} byte limit",
                                        crate::guard::MAX_COMMAND_BYTES
                                    ));
                                }
                                command_buf.extend_from_slice(&data);
                                if !is_last {
                                    continue;
                                }
                                let bytes = std::mem::take(&mut command_buf);
                                let command = match dimse::parse_command(&bytes) {
                                    Ok(c) => c,
                                    Err(e) => {
                                        return End::Abort(format!("unreadable command: {e}"))
                                    }
                                };
                                match command.command_field {
                                    dimse::C_ECHO_RQ => {
                                        ScpMetrics::inc(&self.metrics.echo_requests);
                                        if let Err(e) = send_command(
                                            assoc,
                                            presentation_context_id,
                                            dimse::echo_response(&command),
                                        )
                                        .await
                                        {
                                            return End::Abort(format!(
                                                "cannot answer C-ECHO: {e}"
                                            ));
                                        }
                                    }
                                    dimse::C_STORE_RQ if command.has_data_set => {
                                        incoming = Some(
                                            self.start_store(
                                                assoc,
                                                presentation_context_id,
                                                command,
                                                caller,
                                            )
                                            .await,
                                        );
                                    }
                                    other => {
                                        return End::Abort(format!(
                                            "unsupported DIMSE command 0x{other:04X}"
                                        ))
                                    }
                                }
                            }
                            PDataValueType::Data => {
                                let Some(inc) = incoming.as_mut() else {
                                    return End::Abort(
                                        "data fragment without a C-STORE command".into(),
                                    );
                                };
                                if inc.presentation_context_id != presentation_context_id {
                                    return End::Abort(
                                        "data fragment on another presentation context".into(),
                                    );
                                }
                                if inc.refusal.is_none() {
                                    if let Some(part) = inc.part.as_mut() {
                                        if part.total + data.len() as u64
                                            > self.config.max_object_bytes
                                        {
                                            inc.refusal = Some((
                                                Status::OutOfResources,
                                                format!(
                                                    "object larger than the {} byte limit",
                                                    self.config.max_object_bytes
                                                ),
                                            ));
                                            discard_part(inc.part.take());
                                        } else if let Err(e) = part.push(&data).await {
                                            inc.refusal = Some(io_status(&e));
                                            discard_part(inc.part.take());
                                        }
                                    }
                                }
                                if is_last {
                                    let inc = incoming.take().expect("present");
                                    let (status, comment) = self
                                        .finish_store(inc.part, &inc.command, inc.refusal, caller)
                                        .await;
                                    let rsp = dimse::store_response(
                                        &inc.command,
                                        status,
                                        comment.as_deref(),
                                    );
                                    if let Err(e) =
                                        send_command(assoc, presentation_context_id, rsp).await
                                    {
                                        return End::Abort(format!("cannot answer C-STORE: {e}"));
                                    }
                                }
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if let Some(inc) = incoming.take() {
                        discard_part(inc.part);
                    }
                    return End::Released;
                }
                Pdu::AbortRQ { source } => {
                    if let Some(inc) = incoming.take() {
                        discard_part(inc.part);
                    }
                    debug!(?source, "peer abort");
                    return End::PeerAborted;
                }
                other => {
                    if let Some(inc) = incoming.take() {
                        discard_part(inc.part);
                    }
                    return End::Abort(format!("unexpected PDU {}", pdu_name(&other)));
                }
            }
        }
    }

    /// Decide whether to take the data set of a C-STORE; open its `.part` file if so.
    async fn start_store<S: Stream>(
        &self,
        assoc: &dicom_ul::association::AsyncServerAssociation<S>,
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
        let pc = assoc
            .presentation_contexts()
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
                inc.refusal = Some((Status::CannotUnderstand, e));
                return inc;
            }
        };
        inc.part = Some(PartFile::new(self.spool.clone(), header.0, header.1));
        inc
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
}

impl Connection {
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
                Err(refused) => return refused,
            };
            let sop = match checked_sop(&id, &sop_instance, &sop_class) {
                Ok(u) => u,
                Err(refused) => return refused,
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

/// The data set must be the instance the C-STORE command announced; its SOP Instance UID
/// becomes a file name, so it must also be a valid UID.
fn checked_sop(id: &Identity, sop_instance: &str, sop_class: &str) -> Result<Uid, Finish> {
    if id.sop_instance != sop_instance {
        return Err(Finish::Refused(
            Status::DataSetMismatch,
            "SOP Instance UID differs from the command's".into(),
        ));
    }
    if id.sop_class != sop_class {
        return Err(Finish::Refused(
            Status::DataSetMismatch,
            "SOP Class UID differs from the command's".into(),
        ));
    }
    Uid::new(&id.sop_instance)
        .map_err(|e| Finish::Refused(Status::CannotUnderstand, format!("SOP Instance UID: {e}")))
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

/// Where to read a received instance's header from.
enum Source<'a> {
    /// The whole Part-10 file in memory (preamble included).
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

enum End {
    Released,
    PeerAborted,
    Abort(String),
}

fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::Unknown { .. } => "unknown",
        _ => "other",
    }
}

fn io_status(e: &std::io::Error) -> (Status, String) {
    if staging::is_out_of_space(e) {
        (Status::OutOfResources, "disk full or over quota".into())
    } else {
        (
            Status::ProcessingFailure,
            format!("local I/O error: {}", e.kind()),
        )
    }
}

async fn send_command<S: Stream>(
    assoc: &mut dicom_ul::association::AsyncServerAssociation<S>,
    pc_id: u8,
    bytes: Vec<u8>,
) -> Result<(), dicom_ul::association::Error> {
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .await
}

/// Preamble, "DICM" and the File Meta Information for the instance, as received.
/// With the caller's stamp (Private Information, `provenance`): its digest and sequence number
/// are placeholders, filled in at the returned offsets once the data set is complete.
fn file_header(
    command: &Command,
    transfer_syntax: &str,
    caller: &CallerId,
) -> Result<(Vec<u8>, crate::provenance::Placeholders), String> {
    let calling_ae = caller.ae.as_str();
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(command.affected_sop_class_uid.as_str())
        .media_storage_sop_instance_uid(command.affected_sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax.trim_end_matches('\0'))
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .private_information_creator_uid(crate::provenance::creator_uid())
        .private_information(crate::provenance::private_information(caller));
    if crate::config::valid_ae_title(calling_ae) {
        builder = builder.source_application_entity_title(calling_ae);
    }
    let meta = builder
        .build()
        .map_err(|e| format!("cannot build file meta information: {e}"))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| format!("cannot write file meta information: {e}"))?;
    let spots = crate::provenance::Placeholders::find(&out)
        .ok_or_else(|| "the provenance stamp is missing from the header".to_string())?;
    Ok((out, spots))
}

/// Scan a received instance whole (nesting depth, every declared length against the bytes
/// present: a truncated instance is refused here), then read its header (up to Pixel Data)
/// for its identifying UIDs.
fn identify(source: Source<'_>, limits: &::dimse::scan::Limits) -> Result<Identity, Finish> {
    let scanned = match source {
        Source::Bytes(b) => crate::guard::scan_instance(b, limits).map_err(|e| e.to_string()),
        Source::File(p) => crate::guard::scan_instance_file(p, limits).map_err(|e| e.to_string()),
    };
    if let Err(why) = scanned {
        return Err(Finish::Refused(
            Status::CannotUnderstand,
            format!("data set refused: {why}"),
        ));
    }
    let options = OpenFileOptions::new().read_until(tags::PIXEL_DATA);
    let parsed = match source {
        Source::Bytes(b) => options
            .read_preamble(ReadPreamble::Never)
            .from_reader(b.get(128..).unwrap_or_default()),
        Source::File(p) => options.open_file(p),
    };
    let obj = parsed.map_err(|e| {
        Finish::Refused(
            Status::CannotUnderstand,
            format!("data set cannot be parsed: {}", first_line(&e.to_string())),
        )
    })?;
    let get = |tag| -> Option<String> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    let uid = |tag, name: &str| -> Result<Uid, Finish> {
        let raw = get(tag)
            .ok_or_else(|| Finish::Refused(Status::CannotUnderstand, format!("{name} missing")))?;
        Uid::new(&raw)
            .map_err(|e| Finish::Refused(Status::CannotUnderstand, format!("{name}: {e}")))
    };
    Ok(Identity {
        study: uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
        series: uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
        sop_instance: get(tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class: get(tags::SOP_CLASS_UID).unwrap_or_default(),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}
