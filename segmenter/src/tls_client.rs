//! The one TLS client configuration of delivery: `dicom-tls://` C-STORE destinations and `https://`
//! STOW-RS destinations trust the same way (a CA file, else the system's roots) and present the
//! same kind of client identity (PEM certificate chain and key, for mutual TLS). rustls with the
//! *ring* provider, TLS 1.3 and 1.2 (rustls's safe defaults).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::PrivateKeyDer;

/// Why a TLS client configuration could not be made; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    #[error("CA file {}: {source}", path.display())]
    CaFile { path: PathBuf, source: pem::Error },
    #[error("CA file {}: no certificate in it", path.display())]
    NoCaCertificate { path: PathBuf },
    #[error("CA file {}: {source}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("no CA file given and no system root certificates found")]
    NoSystemRoots,
    #[error("client certificate {}: {source}", path.display())]
    ClientCertificate { path: PathBuf, source: pem::Error },
    #[error("client certificate {}: no certificate in it", path.display())]
    NoClientCertificate { path: PathBuf },
    #[error("client key {}: {source}", path.display())]
    ClientKey { path: PathBuf, source: pem::Error },
    #[error("a TLS client certificate needs both its certificate and key file")]
    HalfClientIdentity,
    #[error("client certificate and key: {0}")]
    ClientIdentity(#[source] rustls::Error),
    #[error("TLS protocol versions: {0}")]
    Versions(#[source] rustls::Error),
}

/// The certificates of `ca_file` (PEM), or the system's roots without one.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_error = |source| TlsClientError::CaFile {
                path: path.to_owned(),
                source,
            };
            let certs = dimse::tls::certificates(path).map_err(|e| match e {
                dimse::tls::PemError::Read(source) => ca_error(source),
                dimse::tls::PemError::Empty => TlsClientError::NoCaCertificate {
                    path: path.to_owned(),
                },
            })?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|source| TlsClientError::BadCaCertificate {
                        path: path.to_owned(),
                        source,
                    })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsClientError::NoSystemRoots);
            }
        }
    }
    Ok(roots)
}

/// A client configuration trusting `ca_file` (else the system's roots), presenting the
/// certificate chain and key when both are given (mutual TLS).
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsClientError> {
    let identity = match (cert_file, key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => return Err(TlsClientError::HalfClientIdentity),
    };
    let roots = root_store(ca_file)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsClientError::Versions)?
    .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = dimse::tls::certificates(cert).map_err(|e| match e {
                dimse::tls::PemError::Read(source) => TlsClientError::ClientCertificate {
                    path: cert.to_owned(),
                    source,
                },
                dimse::tls::PemError::Empty => TlsClientError::NoClientCertificate {
                    path: cert.to_owned(),
                },
            })?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|source| TlsClientError::ClientKey {
                    path: key.to_owned(),
                    source,
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsClientError::ClientIdentity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_keep_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = root_store(Some(&missing)).unwrap_err();
        assert!(matches!(e, TlsClientError::CaFile { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        assert!(std::error::Error::source(&e).is_some());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = root_store(Some(&empty)).unwrap_err();
        assert!(matches!(e, TlsClientError::NoCaCertificate { .. }), "{e:?}");

        let e = client_config(None, Some(&empty), None).unwrap_err();
        assert!(matches!(e, TlsClientError::HalfClientIdentity), "{e:?}");
    }
}
