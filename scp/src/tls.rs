//! DICOM TLS (PS3.15 Annex B, the BCP 195 TLS profile): the listener's rustls configuration and
//! the client certificate's subject for the allowlist and the audit trail.
//!
//! - Protocols: TLS 1.3 and 1.2 only (rustls implements nothing older).
//! - Cipher suites: rustls' defaults with the *ring* provider, which are exactly the AEAD,
//!   forward-secret suites BCP 195 (RFC 9325, 4.2) recommends: TLS 1.3 AES-256-GCM, AES-128-GCM,
//!   CHACHA20-POLY1305; TLS 1.2 ECDHE-{ECDSA,RSA} with AES-256-GCM, AES-128-GCM,
//!   CHACHA20-POLY1305. No CBC, no RSA key exchange, no renegotiation.
//! - Mutual TLS: with a client CA, a client must present a certificate chaining to it (expiry and
//!   signature checked by rustls-webpki); the handshake fails otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path}: no certificate or key in it")]
    Empty { what: &'static str, path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client CA {path}: {source}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

impl TlsError {
    fn pem(what: &'static str, path: PathBuf, e: ::dimse::tls::PemError) -> Self {
        match e {
            ::dimse::tls::PemError::Read(source) => TlsError::Pem { what, path, source },
            ::dimse::tls::PemError::Empty => TlsError::Empty { what, path },
        }
    }
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    ::dimse::tls::certificates(path).map_err(|e| TlsError::pem(what, path.to_path_buf(), e))
}

/// Where a PEM document comes from: a file, or the text itself (a secret injected as an
/// environment variable, as ECS does with Secrets Manager).
#[derive(Debug, Clone)]
pub enum Pem {
    File(PathBuf),
    /// The PEM text; `name` says where it came from in errors (e.g. the variable's name).
    Inline {
        name: String,
        text: String,
    },
}

impl Pem {
    fn origin(&self) -> PathBuf {
        match self {
            Pem::File(p) => p.clone(),
            Pem::Inline { name, .. } => PathBuf::from(name),
        }
    }

    fn certificates(&self, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        match self {
            Pem::File(path) => certificates(path, what),
            Pem::Inline { text, .. } => ::dimse::tls::certificates_from_slice(text.as_bytes())
                .map_err(|e| TlsError::pem(what, self.origin(), e)),
        }
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let key = match self {
            Pem::File(path) => PrivateKeyDer::from_pem_file(path),
            Pem::Inline { text, .. } => PrivateKeyDer::from_pem_slice(text.as_bytes()),
        };
        key.map_err(|source| TlsError::Pem {
            what: "private key",
            path: self.origin(),
            source,
        })
    }
}

/// The listener's TLS configuration from PEM files: its certificate chain and key, and the CA
/// whose certificates clients must present (mutual TLS) if given.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_from(
        &Pem::File(cert.to_path_buf()),
        &Pem::File(key.to_path_buf()),
        client_ca.map(|p| Pem::File(p.to_path_buf())).as_ref(),
    )
}

/// [`server_config`] from files or PEM text.
pub fn server_config_from(
    cert: &Pem,
    key: &Pem,
    client_ca: Option<&Pem>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = cert.certificates("certificate")?;
    let key = key.private_key()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let config = match client_ca {
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in ca.certificates("client CA")? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|source| TlsError::ClientCa {
                path: ca.origin(),
                source,
            })?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

/// The subject of an X.509 certificate (DER) as an RFC 4514-style string, most significant
/// component first as OpenSSL prints it (`C=DE, O=Hospital, CN=pacs1`), and its common name.
/// Only the attribute types an operator writes are named; others appear as dotted OIDs.
/// `None` for anything that is not a well-formed certificate (bounded: no recursion, every
/// length checked against the input).
pub fn certificate_subject(der: &[u8]) -> Option<Subject> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    //   signature, issuer, validity, subject, ... }, ... }
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs, 0xa0)?.1;
    }
    let (_, rest) = tlv(tbs, 0x02)?; // serial
    let (_, rest) = tlv(rest, 0x30)?; // signature algorithm
    let (_, rest) = tlv(rest, 0x30)?; // issuer
    let (_, rest) = tlv(rest, 0x30)?; // validity
    let (mut name, _) = tlv(rest, 0x30)?; // subject
    let mut parts = Vec::new();
    let mut common_name = None;
    while !name.is_empty() {
        let (mut rdn, after) = tlv(name, 0x31)?;
        name = after;
        while !rdn.is_empty() {
            let (atv, after) = tlv(rdn, 0x30)?;
            rdn = after;
            let (oid, value) = tlv(atv, 0x06)?;
            let (tag, text) = any_tlv(value)?;
            // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1), BMPString not
            // decoded (rare; shown as hex).
            let text = match tag {
                0x0c | 0x13 | 0x16 => std::str::from_utf8(text).ok()?.to_string(),
                0x14 => text.iter().map(|&b| b as char).collect(),
                _ => format!("#{}", hex(text)),
            };
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => "",
            };
            if key == "CN" && common_name.is_none() {
                common_name = Some(text.clone());
            }
            if key.is_empty() {
                parts.push(format!("{}={text}", dotted(oid)?));
            } else {
                parts.push(format!("{key}={text}"));
            }
        }
        if parts.len() > 64 {
            return None;
        }
    }
    Some(Subject {
        text: parts.join(", "),
        common_name,
    })
}

/// A certificate's subject: the whole name and its common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub text: String,
    pub common_name: Option<String>,
}

/// One DER TLV with the expected tag: (contents, the rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = any_tlv_rest(input)?;
    (t == tag).then_some((contents, rest))
}

fn any_tlv(input: &[u8]) -> Option<(u8, &[u8])> {
    let (t, contents, _) = any_tlv_rest(input)?;
    Some((t, contents))
}

fn any_tlv_rest(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut value: u64 = 0;
    for &b in rest {
        value = value.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            out.push_str(&format!(".{value}"));
            value = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate made with `openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:P-256 -subj "/C=DE/O=Hospital/OU=Radiology/CN=pacs1" -days 1` (a public
    /// certificate only; its key was not kept).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB3TCCAYOgAwIBAgIUS7Y0PhEK0srT27WFHVes3ME+NCAwCgYIKoZIzj0EAwIw
RDELMAkGA1UEBhMCREUxETAPBgNVBAoMCEhvc3BpdGFsMRIwEAYDVQQLDAlSYWRp
b2xvZ3kxDjAMBgNVBAMMBXBhY3MxMB4XDTI2MTEzMDEyMzEyMVoXDTI2MTIwMTEy
MzEyMVowRDELMAkGA1UEBhMCREUxETAPBgNVBAoMCEhvc3BpdGFsMRIwEAYDVQQL
DAlSYWRpb2xvZ3kxDjAMBgNVBAMMBXBhY3MxMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEafGyISUzyqgDkRq7rWVHm+KuovR1nzCNWitMkCG+XoafmUvAZ+Zv4NIE
e9Uc2RtL/TlexOCWg1KqVMufYK5pMaNTMFEwHQYDVR0OBBYEFFE3nBhhRLZN56Qm
SrEHaiZ3BosAMB8GA1UdIwQYMBaAFFE3nBhhRLZN56QmSrEHaiZ3BosAMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAKbInJUZKEXAazM+u/5eosKd
xJgVyDfMCVis2yLjeG56AiAT9RlqO3nJsbOop06hX2uvU0GSfKnfQ/mxVhR+B/SO
Ag==
-----END CERTIFICATE-----";

    #[test]
    fn the_subject_of_a_real_certificate() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let s = certificate_subject(&der).unwrap();
        assert_eq!(s.text, "C=DE, O=Hospital, OU=Radiology, CN=pacs1");
        assert_eq!(s.common_name.as_deref(), Some("pacs1"));
    }

    #[test]
    fn truncated_or_garbage_input_is_none_never_a_panic() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        for n in 0..der.len() {
            let _ = certificate_subject(&der[..n]);
        }
        assert!(certificate_subject(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(certificate_subject(b"not a certificate").is_none());
        let mut bytes = der.to_vec();
        for i in 0..bytes.len() {
            bytes[i] ^= 0xff;
            let _ = certificate_subject(&bytes);
            bytes[i] ^= 0xff;
        }
    }

    #[test]
    fn oids_print_dotted() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap(),
            "1.2.840.113549"
        );
    }
}
