//! DICOMweb delivery: STOW-RS (PS3.18 10.5) of Part-10 objects to `<base>/studies`.
//!
//! - One `POST` per delivery, `multipart/related; type="application/dicom"`, with a
//!   `Content-Length` (never chunked: Orthanc's DICOMweb plugin answers a chunked upload with 200
//!   and stores nothing).
//! - The response (`application/dicom+json`) is read, at most [`MAX_RESPONSE`] bytes: every
//!   instance sent must be listed in the Referenced SOP Sequence (0008,1199); one listed in the
//!   Failed SOP Sequence (0008,1198) fails the delivery with its Failure Reason, as a refused
//!   C-STORE does; one listed nowhere fails it too (a 200 that stored nothing).
//! - HTTP/1.1 over TCP or TLS (rustls with the CA file given, else the system's roots); hyper,
//!   tokio-rustls and rustls were already in the build through the AWS SDK.
//! - Credentials come from the caller (the binary reads them from the environment); they are never
//!   logged or shown by `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::deliver::{DeliveryError, DeliveryOptions, Part10};

/// Largest response body read (a STOW-RS response lists one item per instance sent).
pub const MAX_RESPONSE: usize = 1 << 20;

/// A DICOMweb service's base URL, e.g. `https://pacs.example.org/dicom-web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomWebDestination {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The base path without a trailing slash ("" for the root).
    pub path: String,
}

impl fmt::Display for DicomWebDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// Why a DICOMweb destination URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DICOMweb destination {input:?}: {why}")]
pub struct DicomWebUrlError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for DicomWebDestination {
    type Err = DicomWebUrlError;
    fn from_str(s: &str) -> Result<Self, DicomWebUrlError> {
        let bad = |why: &'static str| DicomWebUrlError {
            input: s.to_string(),
            why,
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("expected http://HOST[:PORT]/PATH or https://..."));
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("only printable ASCII without spaces is allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not accepted; set SEGNODE_DICOMWEB_TOKEN or \
                 SEGNODE_DICOMWEB_USER/SEGNODE_DICOMWEB_PASSWORD",
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("garbage after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse::<u16>().map_err(|_| bad("bad port"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad("missing host or port 0"));
        }
        Ok(DicomWebDestination {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }
}

/// HTTP authentication for DICOMweb destinations.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => write!(f, "None"),
            Auth::Bearer(_) => write!(f, "Bearer(<redacted>)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
        }
    }
}

impl Auth {
    fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            )),
        }
    }
}

/// DICOMweb settings of a delivery.
#[derive(Debug, Clone, Default)]
pub struct StowOptions {
    pub auth: Auth,
    /// PEM file with the CA certificate(s) to trust for `https` (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A boundary that occurs in none of the parts.
fn boundary_for(parts: &[&[u8]]) -> String {
    let mut n: u64 = parts.iter().map(|p| p.len() as u64).sum();
    loop {
        let b = format!("segnode-{n:016x}");
        let marker = format!("--{b}");
        if !parts
            .iter()
            .any(|p| p.windows(marker.len()).any(|w| w == marker.as_bytes()))
        {
            return b;
        }
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
}

/// The multipart/related body and its boundary.
pub fn multipart_body(objects: &[&[u8]]) -> (String, Vec<u8>) {
    let boundary = boundary_for(objects);
    let mut body = Vec::with_capacity(objects.iter().map(|o| o.len() + 128).sum::<usize>() + 64);
    for o in objects {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(o);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// Escapes peer text for an error message (at most 300 characters).
fn escaped(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(&text[..text.len().min(300)]);
    s.escape_debug().to_string()
}

/// What the destination said about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceResult {
    /// Stored; with the Warning Reason (0008,1196) when one was given.
    Stored(Option<u16>),
    /// In the Failed SOP Sequence with this Failure Reason (0008,1197).
    Failed(u16),
    /// Not listed in the response.
    Missing,
}

/// Reads a STOW-RS JSON response: the result for each SOP Instance UID in `sent`.
/// An error when the body is not JSON at all.
pub fn parse_response(
    body: &[u8],
    sent: &[&str],
) -> Result<Vec<InstanceResult>, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    // Either a data set or an array holding one.
    let ds = match &v {
        serde_json::Value::Array(a) => a.first().cloned().unwrap_or_default(),
        other => other.clone(),
    };
    let items = |tag: &str| -> Vec<serde_json::Value> {
        ds.get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let first_str = |it: &serde_json::Value, tag: &str| -> Option<String> {
        it.get(tag)?
            .get("Value")?
            .as_array()?
            .first()?
            .as_str()
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    let first_u16 = |it: &serde_json::Value, tag: &str| -> Option<u16> {
        let v = it.get(tag)?.get("Value")?.as_array()?.first()?;
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
    };
    let referenced = items("00081199");
    let failed = items("00081198");
    Ok(sent
        .iter()
        .map(|uid| {
            if let Some(f) = failed
                .iter()
                .find(|it| first_str(it, "00081155").as_deref() == Some(uid))
            {
                // A failed item without a reason is still a failure (0xC000: cannot understand).
                return InstanceResult::Failed(first_u16(f, "00081197").unwrap_or(0xC000));
            }
            if let Some(r) = referenced
                .iter()
                .find(|it| first_str(it, "00081155").as_deref() == Some(uid))
            {
                return InstanceResult::Stored(first_u16(r, "00081196"));
            }
            InstanceResult::Missing
        })
        .collect())
}

async fn post(
    dest: &DicomWebDestination,
    options: &DeliveryOptions,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), DeliveryError> {
    let name = dest.to_string();
    let proto = |what, source: Box<dyn std::error::Error + Send + Sync>| DeliveryError::Stow {
        dest: name.clone(),
        what,
        source,
    };
    let connect_error = |source| DeliveryError::Connect {
        dest: name.clone(),
        source,
    };
    let tcp = tokio::time::timeout(
        options.timeout,
        TcpStream::connect((dest.host.as_str(), dest.port)),
    )
    .await
    .map_err(|_| {
        connect_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))
    })?
    .map_err(connect_error)?;
    let _ = tcp.set_nodelay(true);
    let host_header = if dest.host.contains(':') {
        format!("[{}]:{}", dest.host, dest.port)
    } else {
        format!("{}:{}", dest.host, dest.port)
    };
    let len = body.len();
    let mut req = hyper::Request::post(format!("{}/studies", dest.path))
        .header(HOST, host_header)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, len)
        .header(ACCEPT, "application/dicom+json")
        .header(USER_AGENT, concat!("segnode/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = options.dicomweb.auth.header() {
        req = req.header(AUTHORIZATION, a);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| proto("request", e.into()))?;
    let exchange = async {
        if dest.tls {
            let config =
                crate::tls_client::client_config(options.dicomweb.ca_file.as_deref(), None, None)
                    .map_err(|source| DeliveryError::TlsConfig {
                    dest: name.clone(),
                    source,
                })?;
            let server = rustls::pki_types::ServerName::try_from(dest.host.clone())
                .map_err(|e| proto("TLS server name", e.into()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server, tcp)
                .await
                .map_err(|source| DeliveryError::TlsHandshake {
                    dest: name.clone(),
                    source,
                })?;
            send(TokioIo::new(tls), req, &name).await
        } else {
            send(TokioIo::new(tcp), req, &name).await
        }
    };
    tokio::time::timeout(options.timeout, exchange)
        .await
        .map_err(|_| DeliveryError::StowTimeout { dest: name.clone() })?
}

async fn send<T>(
    io: TokioIo<T>,
    req: hyper::Request<Full<Bytes>>,
    name: &str,
) -> Result<(u16, Vec<u8>), DeliveryError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proto = |what, source: hyper::Error| DeliveryError::Stow {
        dest: name.to_string(),
        what,
        source: source.into(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| proto("HTTP handshake", e))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| proto("sending", e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| DeliveryError::Stow {
                dest: name.to_string(),
                what: "reading the response",
                source: e,
            })?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
    .await;
    driver.abort();
    result
}

/// Sends Part-10 objects to `dest` in one STOW-RS request; returns each object's status as a
/// C-STORE would (0x0000, or the Warning Reason), or the first failure.
pub async fn stow_once(
    objects: &[&[u8]],
    dest: &DicomWebDestination,
    options: &DeliveryOptions,
) -> Result<Vec<u16>, DeliveryError> {
    let parts = Part10::parse_all(objects)?;
    let name = dest.to_string();
    let (boundary, body) = multipart_body(objects);
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let (status, response) = post(dest, options, &content_type, body).await?;
    let sent: Vec<&str> = parts.iter().map(|p| p.sop_instance_uid.as_str()).collect();
    let http_error = || DeliveryError::Http {
        dest: name.clone(),
        status,
        body: escaped(&response),
    };
    // 200 all stored, 202 some warnings or failures, 409 all failed: each has a response body.
    if !matches!(status, 200 | 202 | 409) {
        return Err(http_error());
    }
    let results = match parse_response(&response, &sent) {
        Ok(r) => r,
        Err(_) if status == 409 => return Err(http_error()),
        Err(source) => {
            return Err(DeliveryError::StowResponse {
                dest: name,
                body: escaped(&response),
                source,
            })
        }
    };
    let mut statuses = Vec::with_capacity(results.len());
    for (uid, r) in sent.iter().zip(results) {
        match r {
            InstanceResult::Stored(w) => statuses.push(w.unwrap_or(0)),
            InstanceResult::Failed(reason) => {
                return Err(DeliveryError::StowFailed {
                    dest: name,
                    sop_instance: uid.to_string(),
                    reason,
                })
            }
            InstanceResult::Missing => {
                return Err(DeliveryError::StowNotListed {
                    dest: name,
                    status,
                    sop_instance: uid.to_string(),
                })
            }
        }
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let d: DicomWebDestination = "http://127.0.0.1:8042/dicom-web/".parse().unwrap();
        assert_eq!(
            d,
            DicomWebDestination {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8042,
                path: "/dicom-web".into()
            }
        );
        assert_eq!(d.to_string(), "http://127.0.0.1:8042/dicom-web");
        let d: DicomWebDestination = "https://pacs.example.org/dicom-web".parse().unwrap();
        assert_eq!((d.tls, d.port), (true, 443));
        let d: DicomWebDestination = "https://[::1]:9443/dw".parse().unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 9443));
        assert_eq!(d.to_string(), "https://[::1]:9443/dw");
        for bad in [
            "ftp://h/x",
            "http://",
            "http://:80/x",
            "http://u:p@h/x",
            "http://h:0/x",
            "http://h:99999/x",
            "http://h/x?y=1",
            "http://h /x",
        ] {
            assert!(bad.parse::<DicomWebDestination>().is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(
            format!("{:?}", Auth::Bearer("secret".into())),
            "Bearer(<redacted>)"
        );
    }

    #[test]
    fn multipart_body_is_framed_and_the_boundary_is_not_in_the_content() {
        let first = format!("--{}", boundary_for(&[b"x".as_slice()]));
        let tricky = first.as_bytes();
        let (b, body) = multipart_body(&[tricky, b"second"]);
        assert_ne!(format!("--{b}"), first);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches(&format!("--{b}\r\n")).count(), 2);
        assert!(text.ends_with(&format!("\r\n--{b}--\r\n")));
        assert!(text.contains("Content-Type: application/dicom\r\n\r\nsecond\r\n"));
    }

    #[test]
    fn responses_are_read_per_instance() {
        let body = br#"{"00081198":{"vr":"SQ","Value":[{"00081150":{"vr":"UI","Value":["1.2"]},
            "00081155":{"vr":"UI","Value":["1.2.3"]},"00081197":{"vr":"US","Value":[272]}}]},
            "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.4"]},
            "00081196":{"vr":"US","Value":[45056]}},{"00081155":{"vr":"UI","Value":["1.2.5"]}}]}}"#;
        assert_eq!(
            parse_response(body, &["1.2.3", "1.2.4", "1.2.5", "1.2.6"]).unwrap(),
            vec![
                InstanceResult::Failed(0x0110),
                InstanceResult::Stored(Some(0xB000)),
                InstanceResult::Stored(None),
                InstanceResult::Missing
            ]
        );
        assert!(parse_response(b"<xml/>", &["1"]).is_err());
        assert_eq!(
            parse_response(b"{}", &["1"]).unwrap(),
            vec![InstanceResult::Missing]
        );
    }
}
