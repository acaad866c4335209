//! Delivery: C-STORE of the SEG to a destination (PACS, viewer, dcmtk storescp, Orthanc) through
//! `dimse`'s SCU, with retries and backoff; a DICOMweb base URL gets STOW-RS instead
//! ([`crate::stow`], chosen by [`Target`] and sent by [`deliver`], the one seam the worker calls).
//! The SEG is sent as encoded (Explicit VR Little Endian) when the destination accepts that;
//! otherwise re-encoded in Implicit VR Little Endian, which every SCP must accept.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::tls_client::TlsClientError;

pub use dimse::scu::Part10;

/// Where results go over DIMSE: `AET@HOST:PORT` (C-STORE over TCP), or `dicom-tls://AET@HOST:PORT`
/// (over DICOM TLS, trusting [`DimseTls`]'s CA): `dimse`'s AE address.
pub type Destination = dimse::AeAddr;

/// Why a destination (`AET@HOST:PORT` or a DICOMweb URL) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Dimse(#[from] dimse::AeAddrError),
    #[error(transparent)]
    DicomWeb(#[from] crate::stow::DicomWebUrlError),
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
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsClientError> {
        crate::tls_client::client_config(
            self.ca_file.as_deref(),
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
        )
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

/// Why a delivery attempt failed. C-STORE failures are the SCU's own ([`dimse::ScuError`]);
/// STOW-RS and the TLS set-up have theirs.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A C-STORE destination: association, negotiation, a refusal status, the protocol, or an
    /// object that is not Part 10 (shared by STOW-RS, which sends the same objects).
    #[error(transparent)]
    Scu(#[from] dimse::ScuError),
    /// Our own TLS client configuration (CA file, client certificate): nothing was sent.
    #[error("TLS to {dest}: {source}")]
    TlsConfig {
        dest: String,
        source: TlsClientError,
    },
    /// The TCP connection to a DICOMweb destination.
    #[error("connecting to {dest}: {source}")]
    Connect {
        dest: String,
        source: std::io::Error,
    },
    /// The TLS handshake with a DICOMweb destination (an untrusted certificate, say).
    #[error("TLS handshake with {dest}: {source}")]
    TlsHandshake {
        dest: String,
        source: std::io::Error,
    },
    #[error("{dest} answered HTTP {status}: {body}")]
    Http {
        dest: String,
        status: u16,
        /// The start of the response body, escaped.
        body: String,
    },
    /// STOW-RS: the destination's Failed SOP Sequence lists an instance.
    #[error("{dest} did not store {sop_instance}: Failure Reason 0x{reason:04X}")]
    StowFailed {
        dest: String,
        sop_instance: String,
        reason: u16,
    },
    /// STOW-RS: an HTTP exchange that did not complete (hyper's error kept).
    #[error("talking to {dest}: {what}: {source}")]
    Stow {
        dest: String,
        /// The step: `request`, `TLS server name`, `HTTP handshake`, `sending`, `reading the response`.
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// STOW-RS: no complete response within the delivery timeout.
    #[error("talking to {dest}: no complete response within the timeout")]
    StowTimeout { dest: String },
    /// STOW-RS: a success status whose response does not list an instance that was sent.
    #[error(
        "talking to {dest}: HTTP {status}, but the response does not list {sop_instance} as stored"
    )]
    StowNotListed {
        dest: String,
        status: u16,
        sop_instance: String,
    },
    /// STOW-RS: a 200/202 response whose body is not DICOM JSON.
    #[error("{dest}: the STOW-RS response is not DICOM JSON ({source}): {body}")]
    StowResponse {
        dest: String,
        /// The start of the response body, escaped.
        body: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Sends Part-10 objects to `dest` over one association (`dimse::scu::store`, with our AE title,
/// timeouts and TLS trust); returns each object's status (0x0000 or a warning), or the first
/// failure.
pub async fn c_store_once(
    objects: &[&[u8]],
    dest: &Destination,
    options: &DeliveryOptions,
) -> Result<Vec<u16>, DeliveryError> {
    let name = dest.to_string();
    let calling = dimse::AeTitle::new(&options.calling_ae_title).map_err(|e| {
        dimse::ScuError::Association(name.clone(), format!("our calling AE title: {e}"))
    })?;
    let tls = if dest.tls {
        Some(
            options
                .dimse_tls
                .client_config()
                .map_err(|source| DeliveryError::TlsConfig { dest: name, source })?,
        )
    } else {
        None
    };
    let scu = dimse::ScuOptions {
        calling_ae_title: calling,
        timeout: options.timeout,
        max_pdu: options.max_pdu,
    };
    Ok(dimse::scu::store(objects, dest, &scu, tls).await?)
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
            DeliveryError::Scu(
                dimse::ScuError::BadObject(_) | dimse::ScuError::NotAccepted(..),
            ) => true,
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
    fn targets_parse() {
        assert!(matches!(
            "PACS@10.0.0.5:104".parse::<Target>(),
            Ok(Target::Dimse(d)) if d.to_string() == "PACS@10.0.0.5:104"
        ));
        assert!(matches!(
            "http://127.0.0.1:8042/dicom-web".parse::<Target>(),
            Ok(Target::DicomWeb(_))
        ));
        assert!(matches!(
            "PACS".parse::<Target>(),
            Err(DestinationError::Dimse(_))
        ));
    }
}
