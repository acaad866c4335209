//! One association, from the A-ASSOCIATE-AC to its end: the caller checks (the access-control
//! hook dicom-ul calls during negotiation, the client certificate on the TLS port), then the
//! PDU loop, one function per PDU kind and DIMSE command: C-ECHO answered here, C-STORE's
//! data set handed to `receive`.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dicom_ul::association::server::AccessControl;
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, Pdu,
    PresentationContextResultReason, UserIdentity,
};
use staging::Escaped;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::assembler::Assembler;
use crate::config::ScpConfig;
use crate::dimse::{self, Command};
use crate::disk;
use crate::journal::{Journal, JournalWriter};
use crate::metrics::ScpMetrics;
use crate::provenance::{CallerId, Registry};
use crate::receive::Incoming;
use crate::spool::Spool;

/// What an association runs over: TCP, or TLS over TCP.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Called AE must be ours; calling AE (and host) must be on the allowlist if there is one.
/// A refusal is recorded in the audit trail with its reason.
pub(crate) struct Policy {
    pub config: Arc<ScpConfig>,
    pub peer: SocketAddr,
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

/// One accepted connection and what its association works with.
pub(crate) struct Connection {
    pub config: Arc<ScpConfig>,
    pub spool: Arc<Spool>,
    pub journal: Option<Arc<Journal>>,
    /// This association's journal writer, taken at its first journalled instance.
    pub writer: Arc<std::sync::Mutex<Option<JournalWriter>>>,
    pub assembler: Arc<Assembler>,
    pub metrics: Arc<ScpMetrics>,
    /// Who sent the instances in the spool (re-sent instances: identical, correction, conflict).
    pub registry: Arc<Registry>,
    pub peer: SocketAddr,
}

impl Connection {
    /// An established association, to its end. `tls`: `Some` on the TLS port, with the client
    /// certificate's subject if one was presented.
    pub(crate) async fn run<S: Stream>(
        &self,
        mut assoc: AsyncServerAssociation<S>,
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
    pub(crate) fn caller_id(&self, caller: &audit::Caller) -> CallerId {
        CallerId::new(
            &caller.calling_ae,
            self.peer.ip(),
            caller.tls_subject.as_deref(),
        )
    }

    /// Free space in the spool below the configured threshold (or unreadable).
    pub(crate) fn disk_low(&self) -> bool {
        match disk::free_bytes(self.spool.root()) {
            Ok(free) => free < self.config.min_free_disk_bytes,
            Err(e) => {
                warn!(error = %e, "cannot read free disk space; treating it as low");
                true
            }
        }
    }

    /// The PDU loop: each PDU to its handler until one ends the association. A C-STORE still
    /// receiving its data set when it ends is dropped (never acknowledged).
    async fn serve_association<S: Stream>(
        &self,
        assoc: &mut AsyncServerAssociation<S>,
        caller: &audit::Caller,
    ) -> End {
        let mut exchange = Exchange::default();
        let end = loop {
            let pdu = match assoc.receive().await {
                Ok(pdu) => pdu,
                Err(e) => break End::Abort(format!("receive failed or idle timeout: {e}")),
            };
            let step = match pdu {
                Pdu::PData { data } => self.on_pdata(assoc, &mut exchange, data, caller).await,
                Pdu::ReleaseRQ => ControlFlow::Break(End::Released),
                Pdu::AbortRQ { source } => {
                    debug!(?source, "peer abort");
                    ControlFlow::Break(End::PeerAborted)
                }
                other => {
                    ControlFlow::Break(End::Abort(format!("unexpected PDU {}", pdu_name(&other))))
                }
            };
            if let ControlFlow::Break(end) = step {
                break end;
            }
        };
        if let Some(inc) = exchange.incoming.take() {
            inc.discard();
        }
        end
    }

    /// A P-DATA-TF: its fragments in order.
    async fn on_pdata<S: Stream>(
        &self,
        assoc: &mut AsyncServerAssociation<S>,
        exchange: &mut Exchange,
        data: Vec<PDataValue>,
        caller: &audit::Caller,
    ) -> ControlFlow<End> {
        for pdv in data {
            match pdv.value_type {
                PDataValueType::Command => {
                    self.on_command_fragment(assoc, exchange, pdv, caller)
                        .await?
                }
                PDataValueType::Data => self.on_data_fragment(assoc, exchange, pdv, caller).await?,
            }
        }
        ControlFlow::Continue(())
    }

    /// A command fragment: collected (bounded) until the last one, then dispatched.
    async fn on_command_fragment<S: Stream>(
        &self,
        assoc: &mut AsyncServerAssociation<S>,
        exchange: &mut Exchange,
        pdv: PDataValue,
        caller: &audit::Caller,
    ) -> ControlFlow<End> {
        if exchange.incoming.is_some() {
            return abort("command fragment while a data set was still arriving".into());
        }
        if exchange.command.len() + pdv.data.len() > crate::guard::MAX_COMMAND_BYTES {
            return abort(format!(
                "command set over the {} byte limit",
                crate::guard::MAX_COMMAND_BYTES
            ));
        }
        exchange.command.extend_from_slice(&pdv.data);
        if !pdv.is_last {
            return ControlFlow::Continue(());
        }
        let bytes = std::mem::take(&mut exchange.command);
        let command = match dimse::parse_command(&bytes) {
            Ok(c) => c,
            Err(e) => return abort(format!("unreadable command: {e}")),
        };
        let pc_id = pdv.presentation_context_id;
        match command.command_field {
            dimse::C_ECHO_RQ => self.on_echo(assoc, pc_id, &command).await,
            dimse::C_STORE_RQ if command.has_data_set => {
                let contexts = assoc.presentation_contexts();
                exchange.incoming = Some(self.start_store(contexts, pc_id, command, caller));
                ControlFlow::Continue(())
            }
            other => abort(format!("unsupported DIMSE command 0x{other:04X}")),
        }
    }

    /// C-ECHO: counted and answered with success.
    async fn on_echo<S: Stream>(
        &self,
        assoc: &mut AsyncServerAssociation<S>,
        pc_id: u8,
        command: &Command,
    ) -> ControlFlow<End> {
        ScpMetrics::inc(&self.metrics.echo_requests);
        match send_command(assoc, pc_id, dimse::echo_response(command)).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => abort(format!("cannot answer C-ECHO: {e}")),
        }
    }

    /// A data fragment of the C-STORE in progress; after the last one, its response.
    async fn on_data_fragment<S: Stream>(
        &self,
        assoc: &mut AsyncServerAssociation<S>,
        exchange: &mut Exchange,
        pdv: PDataValue,
        caller: &audit::Caller,
    ) -> ControlFlow<End> {
        let Some(inc) = exchange.incoming.as_mut() else {
            return abort("data fragment without a C-STORE command".into());
        };
        let pc_id = pdv.presentation_context_id;
        if inc.presentation_context_id != pc_id {
            return abort("data fragment on another presentation context".into());
        }
        inc.take(&pdv.data, self.config.max_object_bytes).await;
        if !pdv.is_last {
            return ControlFlow::Continue(());
        }
        let inc = exchange.incoming.take().expect("present");
        let rsp = self.complete_store(inc, caller).await;
        match send_command(assoc, pc_id, rsp).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => abort(format!("cannot answer C-STORE: {e}")),
        }
    }
}

/// What an association's DIMSE exchange holds between PDUs.
#[derive(Default)]
struct Exchange {
    /// Command fragments received so far (at most `guard::MAX_COMMAND_BYTES`).
    command: Vec<u8>,
    /// The C-STORE whose data set is arriving.
    incoming: Option<Incoming>,
}

/// How an association ended.
enum End {
    Released,
    PeerAborted,
    Abort(String),
}

fn abort(reason: String) -> ControlFlow<End> {
    ControlFlow::Break(End::Abort(reason))
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
