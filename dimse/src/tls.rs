//! Reading PEM certificates for DICOM TLS, shared by the listener (its certificate chain and the
//! client CA) and delivery (a destination's CA file, the client certificate): every certificate of
//! the document, and a document without any is an error, not an empty trust store.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;

/// Why a PEM document gave no certificates. Callers add which file (and for what) it was.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read, or a PEM section is malformed.
    #[error(transparent)]
    Read(#[from] pem::Error),
    /// A readable document without a single `CERTIFICATE` section (a key file given as the
    /// certificate, say).
    #[error("no certificate in it")]
    Empty,
}

/// Every certificate of the PEM file at `path`, in order (a chain: leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    non_empty(CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?)
}

/// Every certificate of the PEM text `pem` (a secret injected as an environment variable).
pub fn certificates_from_slice(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    non_empty(CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
}

fn non_empty(
    certs: Vec<CertificateDer<'static>>,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    if certs.is_empty() {
        Err(PemError::Empty)
    } else {
        Ok(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_without_certificates_is_an_error() {
        assert!(matches!(
            certificates_from_slice(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(PemError::Empty)
        ));
        assert!(matches!(certificates_from_slice(b""), Err(PemError::Empty)));
        assert!(matches!(
            certificates(Path::new("/nonexistent/ca.pem")),
            Err(PemError::Read(_))
        ));
    }
}
