//! A C-STORE SCU: sends Part-10 objects to a remote AE over one association, over plain TCP or
//! DICOM TLS. Objects go as encoded (their own transfer syntax) when the SCP accepts it; an
//! Explicit VR Little Endian object is re-encoded in Implicit VR Little Endian (which every SCP
//! must accept) when that is all the SCP takes. Retries are the caller's business.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::OpenFileOptions;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use dicom_ul::ClientAssociationOptions;
use dicom_values::{AeAddr, AeTitle};
use tokio::io::AsyncWriteExt;

use crate::command::{parse_store_response, store_request};
use crate::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// At most this many SOP class / transfer syntax combinations in one send (PS3.8 allows 128
/// presentation contexts per association).
pub const MAX_CONTEXTS: usize = 128;

/// Why a C-STORE did not store every object. The messages name the destination.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("association with {0} failed: {1}")]
    Association(String, String),
    #[error(
        "{0} accepted no presentation context for SOP class {1} in the transfer syntaxes proposed"
    )]
    NotAccepted(String, String),
    #[error("{dest} answered C-STORE with status 0x{status:04X}{}", comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        dest: String,
        status: u16,
        comment: Option<String>,
    },
    #[error("talking to {0}: {1}")]
    Protocol(String, String),
    #[error("the object to send is not a valid Part-10 object: {0}")]
    BadObject(String),
}

/// How we present ourselves and how long we wait.
#[derive(Debug, Clone)]
pub struct ScuOptions {
    pub calling_ae_title: AeTitle,
    /// Connect, read and write timeout.
    pub timeout: Duration,
    pub max_pdu: u32,
}

/// A Part-10 object as sent: its UIDs, transfer syntax and data set bytes (after the file meta
/// group, never re-encoded unless the destination forces Implicit VR Little Endian).
pub struct Part10<'a> {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    dataset: &'a [u8],
    bytes: &'a [u8],
}

impl<'a> Part10<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ScuError> {
        let bad = |m: &str| ScuError::BadObject(m.to_string());
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err(bad("no preamble and DICM prefix"));
        }
        // (0002,0000) UL 4 <group length>, explicit VR LE.
        let g = &bytes[132..144];
        if g[0..4] != [0x02, 0x00, 0x00, 0x00] || &g[4..6] != b"UL" {
            return Err(bad("file meta group does not start with its group length"));
        }
        let len = u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as usize;
        let start = 144usize.saturating_add(len);
        if start > bytes.len() {
            return Err(bad("file meta group longer than the object"));
        }
        let meta = OpenFileOptions::new()
            .read_until(tags::PATIENT_NAME)
            .from_reader(bytes)
            .map_err(|e| bad(&e.to_string()))?;
        let m = meta.meta();
        let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Ok(Part10 {
            sop_class_uid: clean(m.media_storage_sop_class_uid()),
            sop_instance_uid: clean(m.media_storage_sop_instance_uid()),
            transfer_syntax: clean(m.transfer_syntax()),
            dataset: &bytes[start..],
            bytes,
        })
    }

    /// Parses every object (the first malformed one is the error).
    pub fn parse_all(objects: &[&'a [u8]]) -> Result<Vec<Self>, ScuError> {
        objects.iter().map(|b| Part10::parse(b)).collect()
    }

    /// The data set in `ts` (its own, or Implicit VR LE re-encoded from Explicit VR LE).
    fn dataset_in(&self, ts: &str) -> Result<Cow<'a, [u8]>, ScuError> {
        if ts == self.transfer_syntax {
            return Ok(Cow::Borrowed(self.dataset));
        }
        let file = OpenFileOptions::new()
            .from_reader(self.bytes)
            .map_err(|e| ScuError::BadObject(e.to_string()))?;
        let target = TransferSyntaxRegistry
            .get(ts)
            .ok_or_else(|| ScuError::BadObject(format!("unknown transfer syntax {ts}")))?;
        let mut out = Vec::with_capacity(self.dataset.len() + 1024);
        file.write_dataset_with_ts(&mut out, target)
            .map_err(|e| ScuError::BadObject(e.to_string()))?;
        Ok(Cow::Owned(out))
    }

    /// Transfer syntaxes to propose: the object's own, plus Implicit VR LE when it is Explicit VR LE
    /// (lossless re-encoding; every SCP must accept Implicit VR LE).
    fn proposals(&self) -> Vec<String> {
        let mut v = vec![self.transfer_syntax.clone()];
        if self.transfer_syntax == EXPLICIT_VR_LE {
            v.push(IMPLICIT_VR_LE.to_string());
        }
        v
    }
}

/// Sends Part-10 objects to `dest` over one association (one presentation context per SOP class
/// and transfer syntax); returns each object's status (0x0000 or a warning 0xB000/0xB006/0xB007),
/// or the first failure. `tls` is the client configuration for a `dicom-tls://` destination (an
/// error without one).
pub async fn store(
    objects: &[&[u8]],
    dest: &AeAddr,
    options: &ScuOptions,
    tls: Option<rustls::ClientConfig>,
) -> Result<Vec<u16>, ScuError> {
    let parts = Part10::parse_all(objects)?;
    let name = dest.to_string();
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for p in &parts {
        let key = (p.sop_class_uid.clone(), p.proposals());
        if !contexts.contains(&key) {
            contexts.push(key);
        }
    }
    if contexts.len() > MAX_CONTEXTS {
        return Err(ScuError::BadObject(format!(
            "more than {MAX_CONTEXTS} SOP class / transfer syntax combinations in one send"
        )));
    }
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(options.calling_ae_title.as_str().to_string())
        .called_ae_title(dest.ae_title.as_str().to_string())
        .max_pdu_length(options.max_pdu)
        .connection_timeout(options.timeout)
        .read_timeout(options.timeout)
        .write_timeout(options.timeout);
    for (class, tss) in &contexts {
        opts = opts.with_presentation_context(class.clone(), tss.clone());
    }
    let association = |e: &dyn fmt::Display| ScuError::Association(name.clone(), e.to_string());
    let addr = dest.socket_addr();
    // Command and data set go out as separate small writes: without TCP_NODELAY, Nagle's algorithm
    // and the peer's delayed ACK stall every C-STORE by ~40 ms.
    if dest.tls {
        let config = tls.ok_or_else(|| association(&"TLS: no client configuration"))?;
        let mut assoc = opts
            .tls_config(config)
            .server_name(&dest.host)
            .establish_tls_async(addr)
            .await
            .map_err(|e| association(&format!("TLS: {e}")))?;
        let _ = assoc.inner_stream().get_ref().0.set_nodelay(true);
        store_over(assoc, &parts, name).await
    } else {
        let mut assoc = opts
            .establish_async(addr)
            .await
            .map_err(|e| association(&e))?;
        let _ = assoc.inner_stream().set_nodelay(true);
        store_over(assoc, &parts, name).await
    }
}

/// The C-STOREs of `parts` on an established association, then its release.
async fn store_over<S>(
    mut assoc: dicom_ul::association::client::AsyncClientAssociation<S>,
    parts: &[Part10<'_>],
    name: String,
) -> Result<Vec<u16>, ScuError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let accepted: Vec<dicom_ul::pdu::PresentationContextNegotiated> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| {
            matches!(
                pc.reason,
                dicom_ul::pdu::PresentationContextResultReason::Acceptance
            )
        })
        .cloned()
        .collect();
    let proto = |e: &dyn fmt::Display| ScuError::Protocol(name.clone(), e.to_string());
    let mut statuses = Vec::with_capacity(parts.len());
    for (n, p) in parts.iter().enumerate() {
        let pc = accepted
            .iter()
            .find(|pc| {
                pc.abstract_syntax.trim_end_matches('\0') == p.sop_class_uid
                    && p.proposals()
                        .iter()
                        .any(|t| t == pc.transfer_syntax.trim_end_matches('\0'))
            })
            .cloned();
        let Some(pc) = pc else {
            let _ = assoc.abort().await;
            return Err(ScuError::NotAccepted(name, p.sop_class_uid.clone()));
        };
        let dataset = p.dataset_in(pc.transfer_syntax.trim_end_matches('\0'))?;
        // Message IDs wrap at 65535 (they only need to be unique among outstanding requests).
        let message_id = (n % 0xFFFF) as u16 + 1;
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: store_request(&p.sop_class_uid, &p.sop_instance_uid, message_id),
                }],
            })
            .await
            .map_err(|e| proto(&e))?;
        {
            let mut writer = assoc.send_pdata(pc.id);
            writer.write_all(&dataset).await.map_err(|e| proto(&e))?;
            writer.finish().await.map_err(|e| proto(&e))?;
        }
        // The response: command fragments until the last one, bounded like a request.
        let mut command = Vec::new();
        loop {
            match assoc.receive().await.map_err(|e| proto(&e))? {
                Pdu::PData { data } => {
                    let mut last = false;
                    for v in data {
                        if v.value_type == PDataValueType::Command {
                            command.extend_from_slice(&v.data);
                            last |= v.is_last;
                        }
                    }
                    if command.len() > crate::command::MAX_COMMAND_BYTES {
                        let _ = assoc.abort().await;
                        return Err(proto(&format!(
                            "C-STORE-RSP command set over {} bytes",
                            crate::command::MAX_COMMAND_BYTES
                        )));
                    }
                    if last {
                        break;
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(ScuError::Protocol(
                        name,
                        format!("the destination aborted the association ({source:?})"),
                    ))
                }
                other => {
                    let _ = assoc.abort().await;
                    return Err(ScuError::Protocol(
                        name,
                        format!("unexpected {other:?} while waiting for C-STORE-RSP"),
                    ));
                }
            }
        }
        let rsp = parse_store_response(&command).map_err(|e| proto(&e))?;
        if rsp.is_stored() {
            statuses.push(rsp.status);
        } else {
            let _ = assoc.release().await;
            return Err(ScuError::Refused {
                dest: name,
                status: rsp.status,
                comment: rsp.comment,
            });
        }
    }
    let _ = assoc.release().await;
    Ok(statuses)
}

impl ScuError {
    /// Failures that another attempt cannot cure: a malformed object, or a SOP class the
    /// destination does not accept.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ScuError::BadObject(_) | ScuError::NotAccepted(..))
    }
}
