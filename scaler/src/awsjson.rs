//! A minimal client for AWS services that speak the JSON 1.1 protocol (ECS among them): one
//! SigV4-signed `POST /` with `X-Amz-Target: <prefix>.<Operation>` and a JSON body per call.
//!
//! Why not `aws-sdk-ecs`: the scaler makes two ECS calls (DescribeServices, UpdateService), and
//! the generated ECS crate was the largest compile unit after tract-core in the release build a
//! newcomer makes first (645 s of one core's time at opt-level 3, ~200 s at 1). What we keep from
//! the SDK is what matters for correctness: the credential chain (environment, profile, ECS task
//! role, instance role; refreshed by the provider) and the region come from the same `SdkConfig`
//! as S3 and SQS, and requests are signed by `aws-sigv4`, the SDK's own signer. What we give up is
//! the SDK's retry loop: a failed call is an error, and the scaler's next tick (seconds later)
//! is the retry. The HTTP stack is the one the SDK already builds (hyper 1, tokio-rustls with the
//! *ring* provider, the system's root certificates).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Answers larger than this are refused (an ECS DescribeServices answer for one service is a few
/// KiB, with its deployments and events at most ~100 KiB).
const MAX_RESPONSE: usize = 4 << 20;
/// Connect, TLS handshake, request and the whole answer, per call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no AWS credentials configured (environment, profile, task or instance role)")]
    NoCredentials,
    #[error("loading AWS credentials")]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("no AWS region configured (--aws-region or AWS_REGION)")]
    NoRegion,
    #[error("endpoint {0:?} is not an http(s)://host[:port] URL")]
    Endpoint(String),
    #[error("signing the request")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {endpoint}")]
    Tls {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no system root certificates found for TLS")]
    NoRoots,
    #[error("HTTP exchange with {endpoint}")]
    Http {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no complete answer from {0} within {CALL_TIMEOUT:?}")]
    Timeout(String),
    #[error("{code}: {message} (HTTP {status})")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the answer is not the expected JSON")]
    Decode(#[source] serde_json::Error),
}

/// Where requests go, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, CallError> {
        let bad = || CallError::Endpoint(url.to_string());
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        let port_of = |p: Option<&str>| match p {
            None => Ok(default_port),
            Some(p) => p.parse::<u16>().map_err(|_| bad()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(bad)?),
            };
            (host, port_of(port)?)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, port_of(Some(p))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// The value of the Host header (and of the signed `host`): the port only when not the
    /// scheme's default, as the SDKs write it.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn url(&self) -> String {
        format!(
            "{}://{}/",
            if self.tls { "https" } else { "http" },
            self.authority()
        )
    }
}

/// One AWS JSON 1.1 service (`signing_name` as in SigV4, e.g. `ecs`).
#[derive(Clone)]
pub struct AwsJsonClient {
    endpoint: Endpoint,
    region: String,
    signing_name: &'static str,
    target_prefix: &'static str,
    credentials: Option<SharedCredentialsProvider>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for AwsJsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsJsonClient")
            .field("endpoint", &self.endpoint.url())
            .field("region", &self.region)
            .field("service", &self.signing_name)
            .finish()
    }
}

impl AwsJsonClient {
    /// A client for `signing_name` in the configuration's region, at the configuration's
    /// endpoint override (moto, VPC endpoint) or at `https://<signing_name>.<region>.amazonaws.com`
    /// (`.amazonaws.com.cn` in the China regions).
    pub fn new(
        config: &SdkConfig,
        signing_name: &'static str,
        target_prefix: &'static str,
    ) -> Result<Self, CallError> {
        let region = config
            .region()
            .map(|r| r.as_ref().to_string())
            .ok_or(CallError::NoRegion)?;
        let url = match config.endpoint_url() {
            Some(u) => u.to_string(),
            None => {
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://{signing_name}.{region}.{suffix}")
            }
        };
        let endpoint = Endpoint::parse(&url)?;
        let tls = if endpoint.tls {
            Some(Arc::new(tls_config()?))
        } else {
            None
        };
        Ok(AwsJsonClient {
            endpoint,
            region,
            signing_name,
            target_prefix,
            credentials: config.credentials_provider(),
            tls,
        })
    }

    /// Calls `operation` with `input`; the service's answer as JSON, or its error
    /// (`__type` and `message`) as [`CallError::Service`].
    pub async fn call(
        &self,
        operation: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let request = self.signed_request(operation, input).await?;
        let endpoint = self.endpoint.url();
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| CallError::Timeout(endpoint))??;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(CallError::Decode);
        }
        Err(service_error(status, &body))
    }

    async fn signed_request(
        &self,
        operation: &str,
        input: &serde_json::Value,
    ) -> Result<hyper::Request<Full<Bytes>>, CallError> {
        let provider = self.credentials.as_ref().ok_or(CallError::NoCredentials)?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(CallError::Credentials)?;
        let body = serde_json::to_vec(input).map_err(CallError::Decode)?;
        let target = format!("{}.{operation}", self.target_prefix);
        let mut request = hyper::Request::post(self.endpoint.url())
            .header("host", self.endpoint.authority())
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            .header("user-agent", concat!("segnode/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| CallError::Sign(Box::new(e)))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.signing_name)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CallError::Sign(Box::new(e)))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            request.uri().to_string(),
            headers.into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| CallError::Sign(Box::new(e)))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| CallError::Sign(Box::new(e)))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let endpoint = self.endpoint.url();
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|source| CallError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let server = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| CallError::Tls {
                        endpoint: endpoint.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server, tcp)
                    .await
                    .map_err(|source| CallError::Tls {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                send(TokioIo::new(tls), request, &endpoint).await
            }
            None => send(TokioIo::new(tcp), request, &endpoint).await,
        }
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Full<Bytes>>,
    endpoint: &str,
) -> Result<(u16, Vec<u8>), CallError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source: Box<dyn std::error::Error + Send + Sync>| CallError::Http {
        endpoint: endpoint.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| http(Box::new(e)))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http(Box::new(e)))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
    .await;
    driver.abort();
    result
}

/// An AWS JSON error answer: `{"__type": "...#ClusterNotFoundException", "message": "..."}`
/// (some services write `Message`); anything else is reported by its status and first bytes.
fn service_error(status: u16, body: &[u8]) -> CallError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| {
        parsed.as_ref().and_then(|v| {
            names
                .iter()
                .find_map(|n| v.get(*n).and_then(|x| x.as_str()).map(str::to_string))
        })
    };
    let code = field(&["__type", "code"])
        .map(|t| t.rsplit('#').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = field(&["message", "Message"])
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    CallError::Service {
        status,
        code: code.escape_debug().to_string(),
        message: message.escape_debug().to_string(),
    }
}

fn tls_config() -> Result<rustls::ClientConfig, CallError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(CallError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Tls {
            endpoint: String::new(),
            source: std::io::Error::other(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print_as_the_sdk_signs_them() {
        let e = Endpoint::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 5000));
        assert_eq!(e.authority(), "127.0.0.1:5000");
        let e = Endpoint::parse("https://ecs.eu-west-1.amazonaws.com/").unwrap();
        assert_eq!(e.port, 443);
        assert_eq!(e.authority(), "ecs.eu-west-1.amazonaws.com");
        assert_eq!(e.url(), "https://ecs.eu-west-1.amazonaws.com/");
        let e = Endpoint::parse("http://[::1]:4566").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4566));
        assert_eq!(e.authority(), "[::1]:4566");
        let e = Endpoint::parse("https://[::1]").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 443));
        for bad in [
            "ecs.amazonaws.com",
            "ftp://x",
            "http://",
            "http://h/path",
            "http://u@h",
            "http://h:99999",
            "http://[::1",
            "http://[::1]x",
            "http://h:1:2",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_errors_keep_the_code_and_escape_peer_text() {
        let e = service_error(
            400,
            br#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found.\n"}"#,
        );
        match e {
            CallError::Service {
                status,
                code,
                message,
            } => {
                assert_eq!(status, 400);
                assert_eq!(code, "ClusterNotFoundException");
                assert_eq!(message, "Cluster not found.\\n");
            }
            other => panic!("{other:?}"),
        }
        let e = service_error(503, b"<html>\x1b[31m busy");
        assert_eq!(e.to_string(), "HTTP 503: <html>\\u{1b}[31m busy (HTTP 503)");
    }
}
