//! The listener: `Scp::bind` (recover the spool and the journal, bind the plain and TLS ports)
//! and `Scp::serve` (accept, admission of connections still negotiating, association slots, the
//! TLS handshake and association negotiation within ARTIM, refusals with A-ASSOCIATE-RJ), then
//! each association to `association`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource, Pdu,
};
use dicom_ul::ServerAssociationOptions;
use staging::logsafe::RateLimited;
use staging::{Escaped, JobQueue, ObjectStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::assembler::Assembler;
use crate::association::{Connection, Policy};
use crate::config::ScpConfig;
use crate::journal::Journal;
use crate::metrics::ScpMetrics;
use crate::provenance::Registry;
use crate::sop::VERIFICATION;
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

fn reject_pdu(result: AssociationRJResult, source: AssociationRJSource) -> Pdu {
    Pdu::AssociationRJ(AssociationRJ { result, source })
}

impl Connection {
    /// One accepted connection: refused (A-ASSOCIATE-RJ) when every association slot is taken
    /// or the disk is low; otherwise negotiated within ARTIM (on the TLS port the handshake
    /// too) and run to its end by `association`.
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
}
