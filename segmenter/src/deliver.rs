//! Delivery: C-STORE SCU of the SEG to a destination (PACS, viewer, dcmtk storescp, Orthanc), with
//! retries and backoff; a DICOMweb base URL gets STOW-RS instead ([`crate::stow`], chosen by
//! [`Target`] and sent by [`deliver`], the one seam the worker calls). The SEG is sent as encoded (Explicit VR Little Endian) when the destination
//! accepts that; otherwise re-encoded in Implicit VR Little Endian, which every SCP must accept.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use dicom_ul::ClientAssociationOptions;
use tokio::io::AsyncWriteExt;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Where results go: `AET@HOST:PORT` (C-STORE over TCP), or `dicom-tls://AET@HOST:PORT` (over
/// DICOM TLS, trusting [`DimseTls`]'s CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("dicom-tls://")?;
        }
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

/// Why a destination (`AET@HOST:PORT` or a DICOMweb URL) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination {0:?}: expected AET@HOST:PORT or dicom-tls://AET@HOST:PORT, e.g. PACS@10.0.0.5:104")]
    Syntax(String),
    #[error("destination {0:?}: AE title must be 1-16 printable ASCII characters")]
    AeTitle(String),
    #[error(transparent)]
    DicomWeb(#[from] crate::stow::DicomWebUrlError),
}

impl FromStr for Destination {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, DestinationError> {
        let usage = || DestinationError::Syntax(s.to_string());
        let (tls, rest) = match (s.strip_prefix("dicom-tls://"), s.strip_prefix("dicom://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            (None, None) => (false, s),
        };
        let (ae, addr) = rest.split_once('@').ok_or_else(usage)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(usage)?;
        let ae = ae.trim();
        if ae.is_empty()
            || ae.len() > 16
            || !ae.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            || ae.contains('\\')
        {
            return Err(DestinationError::AeTitle(s.to_string()));
        }
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(usage)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(usage());
        }
        Ok(Destination {
            ae_title: ae.to_string(),
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// How we present ourselves and how hard we try.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    pub calling_ae_title: String,
    /// Attempts per destination within one job attempt (the queue retries the whole job after that).
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub backoff: Duration,
    /// Connect, read and write timeout.
    pub timeout: Duration,
    pub max_pdu: u32,
    /// Authentication and TLS trust for DICOMweb destinations.
    pub dicomweb: crate::stow::StowOptions,
    /// Trust and client certificate for `dicom-tls://` destinations.
    pub dimse_tls: DimseTls,
}

/// DICOM TLS for C-STORE destinations: the CA to trust (else the system's roots) and an
/// optional client certificate and key (for destinations that require mutual TLS). PEM files.
#[derive(Debug, Clone, Default)]
pub struct DimseTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

impl DimseTls {
    /// The rustls client configuration (TLS 1.3/1.2, *ring*); an error names the file.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let roots = crate::stow::root_store(self.ca_file.as_deref())?;
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("client key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))
            }
            _ => Err("a TLS client certificate needs both its certificate and key file".into()),
        }
    }
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            calling_ae_title: "SEGNODE".into(),
            attempts: 3,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            max_pdu: 116_794,
            dicomweb: crate::stow::StowOptions::default(),
            dimse_tls: DimseTls::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
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
    #[error("{dest} answered HTTP {status}: {body}")]
    Http {
        dest: String,
        status: u16,
        /// The start of the response body, escaped.
        body: String,
    },
    #[error("talking to {0}: {1}")]
    Protocol(String, String),
    #[error("the SEG to send is not a valid Part-10 object: {0}")]
    BadObject(String),
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
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DeliveryError> {
        let bad = |m: &str| DeliveryError::BadObject(m.to_string());
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err(bad("no preamble and DICM prefix"));
        }
        // (0002,0000) UL 4 <group length>, explicit VR LE.
        let g = &bytes[132..144];
        if g[0..4] != [0x02, 0x00, 0x00, 0x00] || &g[4..6] != b"UL" {
            return Err(bad("file meta group does not start with its group length"));
        }
        let len = u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as usize;
        let start = 144 + len;
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
    pub fn parse_all(objects: &[&'a [u8]]) -> Result<Vec<Self>, DeliveryError> {
        objects.iter().map(|b| Part10::parse(b)).collect()
    }

    /// The data set in `ts` (its own, or Implicit VR LE re-encoded from Explicit VR LE).
    fn dataset_in(&self, ts: &str) -> Result<std::borrow::Cow<'a, [u8]>, DeliveryError> {
        if ts == self.transfer_syntax {
            return Ok(std::borrow::Cow::Borrowed(self.dataset));
        }
        let file = OpenFileOptions::new()
            .from_reader(self.bytes)
            .map_err(|e| DeliveryError::BadObject(e.to_string()))?;
        let target = TransferSyntaxRegistry
            .get(ts)
            .ok_or_else(|| DeliveryError::BadObject(format!("unknown transfer syntax {ts}")))?;
        let mut out = Vec::with_capacity(self.dataset.len() + 1024);
        file.write_dataset_with_ts(&mut out, target)
            .map_err(|e| DeliveryError::BadObject(e.to_string()))?;
        Ok(std::borrow::Cow::Owned(out))
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

fn uid_value(uid: &str) -> PrimitiveValue {
    let mut s = uid.to_string();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    PrimitiveValue::from(s)
}

fn store_command(sop_class: &str, sop_instance: &str, message_id: u16) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter([
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, uid_value(sop_class)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0001])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0x0000])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            uid_value(sop_instance),
        ),
    ]);
    let ts = TransferSyntaxRegistry
        .get(IMPLICIT_VR_LE)
        .expect("implicit VR LE is built in");
    let mut out = Vec::with_capacity(200);
    obj.write_dataset_with_ts(&mut out, ts)
        .expect("writing a command to memory cannot fail");
    out
}

/// Sends Part-10 objects to `dest` over one association (one presentation context per SOP class
/// and transfer syntax); returns each object's status (0x0000 or a warning 0xB000/0xB006/0xB007),
/// or the first failure.
pub async fn c_store_once(
    objects: &[&[u8]],
    dest: &Destination,
    options: &DeliveryOptions,
) -> Result<Vec<u16>, DeliveryError> {
    let parts = Part10::parse_all(objects)?;
    let name = dest.to_string();
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for p in &parts {
        let key = (p.sop_class_uid.clone(), p.proposals());
        if !contexts.contains(&key) {
            contexts.push(key);
        }
    }
    if contexts.len() > 128 {
        return Err(DeliveryError::BadObject(
            "more than 128 SOP class / transfer syntax combinations in one send".into(),
        ));
    }
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(options.calling_ae_title.clone())
        .called_ae_title(dest.ae_title.clone())
        .max_pdu_length(options.max_pdu)
        .connection_timeout(options.timeout)
        .read_timeout(options.timeout)
        .write_timeout(options.timeout);
    for (class, tss) in &contexts {
        opts = opts.with_presentation_context(class.clone(), tss.clone());
    }
    let association =
        |e: &dyn fmt::Display| DeliveryError::Association(name.clone(), e.to_string());
    let addr = format!("{}:{}", dest.host, dest.port);
    // Command and data set go out as separate small writes: without TCP_NODELAY, Nagle's algorithm
    // and the peer's delayed ACK stall every C-STORE by ~40 ms.
    if dest.tls {
        let config = options
            .dimse_tls
            .client_config()
            .map_err(|e| association(&format!("TLS: {e}")))?;
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
) -> Result<Vec<u16>, DeliveryError>
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
    let proto = |e: &dyn fmt::Display| DeliveryError::Protocol(name.clone(), e.to_string());
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
            return Err(DeliveryError::NotAccepted(name, p.sop_class_uid.clone()));
        };
        let dataset = p.dataset_in(pc.transfer_syntax.trim_end_matches('\0'))?;
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: store_command(&p.sop_class_uid, &p.sop_instance_uid, n as u16 + 1),
                }],
            })
            .await
            .map_err(|e| proto(&e))?;
        {
            let mut writer = assoc.send_pdata(pc.id);
            writer.write_all(&dataset).await.map_err(|e| proto(&e))?;
            writer.finish().await.map_err(|e| proto(&e))?;
        }
        // The response: command fragments until the last one.
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
                    if last {
                        break;
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(DeliveryError::Protocol(
                        name,
                        format!("the destination aborted the association ({source:?})"),
                    ))
                }
                other => {
                    let _ = assoc.abort().await;
                    return Err(DeliveryError::Protocol(
                        name,
                        format!("unexpected {other:?} while waiting for C-STORE-RSP"),
                    ));
                }
            }
        }
        let ts = TransferSyntaxRegistry
            .get(IMPLICIT_VR_LE)
            .expect("implicit VR LE is built in");
        let rsp = InMemDicomObject::read_dataset_with_ts(command.as_slice(), ts)
            .map_err(|e| proto(&e))?;
        let status = rsp
            .element(tags::STATUS)
            .ok()
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or_else(|| proto(&"C-STORE-RSP without Status"))?;
        match status {
            0x0000 | 0xB000 | 0xB006 | 0xB007 => statuses.push(status),
            _ => {
                let comment = rsp
                    .element(tags::ERROR_COMMENT)
                    .ok()
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim().to_string());
                let _ = assoc.release().await;
                return Err(DeliveryError::Refused {
                    dest: name,
                    status,
                    comment,
                });
            }
        }
    }
    let _ = assoc.release().await;
    Ok(statuses)
}

/// A destination: a DICOM AE (`AET@HOST:PORT`, C-STORE) or a DICOMweb base URL (`http(s)://...`,
/// STOW-RS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dimse(Destination),
    DicomWeb(crate::stow::DicomWebDestination),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dimse(d) => d.fmt(f),
            Target::DicomWeb(d) => d.fmt(f),
        }
    }
}

impl FromStr for Target {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, DestinationError> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Target::DicomWeb(s.parse()?))
        } else {
            Ok(Target::Dimse(s.parse()?))
        }
    }
}

impl DeliveryError {
    /// Failures that another attempt cannot cure: a malformed object, a SOP class the destination
    /// does not accept, or an HTTP client error other than timeout / too many requests.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::BadObject(_) | DeliveryError::NotAccepted(..) => true,
            DeliveryError::Http { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 429)
            }
            _ => false,
        }
    }
}

/// Delivers Part-10 objects (the SEG and what goes with it) to one target in one association or
/// one STOW-RS request, with up to `options.attempts` tries and exponential backoff; returns each
/// object's status (0x0000 or a warning). The error is the last attempt's.
pub async fn deliver(
    objects: &[&[u8]],
    target: &Target,
    options: &DeliveryOptions,
) -> Result<Vec<u16>, DeliveryError> {
    let mut wait = options.backoff;
    let mut attempt = 1;
    loop {
        let result = match target {
            Target::Dimse(d) => c_store_once(objects, d, options).await,
            Target::DicomWeb(d) => crate::stow::stow_once(objects, d, options).await,
        };
        match result {
            Ok(statuses) => return Ok(statuses),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) if attempt >= options.attempts.max(1) => return Err(e),
            Err(e) => {
                tracing::warn!(destination = %target, attempt, error = %e, "delivery failed; retrying in {:?}", wait);
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}

/// [`c_store_once`] of one object with up to `options.attempts` tries and exponential backoff. The
/// error is the last attempt's.
pub async fn c_store(
    part10: &[u8],
    dest: &Destination,
    options: &DeliveryOptions,
) -> Result<u16, DeliveryError> {
    let statuses = deliver(&[part10], &Target::Dimse(dest.clone()), options).await?;
    Ok(statuses[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let d: Destination = "PACS@10.0.0.5:104".parse().unwrap();
        assert_eq!(d.to_string(), "PACS@10.0.0.5:104");
        let d: Destination = "ORTHANC@[::1]:4242".parse().unwrap();
        assert_eq!(d.host, "::1");
        for bad in [
            "PACS",
            "@h:1",
            "P@h",
            "P@h:0",
            "P@h:x",
            "ABCDEFGHIJKLMNOPQ@h:1",
            "P@:1",
        ] {
            assert!(bad.parse::<Destination>().is_err(), "{bad}");
        }
    }
}
