//! ECS task scale-in protection: a worker holding a job asks the ECS agent not to stop its
//! task (`PUT $ECS_AGENT_URI/task-protection/v1/state`), with an expiry so a hung worker does
//! not stay protected for ever, and lifts it when idle. When the service's desired count is
//! lowered, ECS then stops only unprotected (idle) tasks.
//!
//! The agent endpoint is plain HTTP on a link-local address; a few lines over a TcpStream
//! are enough and keep an HTTP client stack out of the worker.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

/// The agent accepts 1 to 2880 minutes (48 hours).
pub const MAX_EXPIRY_MINUTES: u64 = 2880;

#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error("ECS agent URI {0:?} is not an http://host[:port][/path] URL")]
    BadUri(String),
    #[error("cannot reach the ECS agent at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("ECS agent at {addr}: {message}")]
    Io { addr: String, message: String },
    #[error("ECS agent refused task protection (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
}

/// Client for one task's protection state. Build it from the `ECS_AGENT_URI` the ECS agent
/// gives every task (the binary reads the variable; this library does not).
#[derive(Debug, Clone)]
pub struct TaskProtection {
    /// host:port to connect to.
    addr: String,
    /// Host header value.
    host: String,
    /// Path of the state resource.
    path: String,
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionState {
    pub enabled: bool,
    /// As the agent reports it (ISO 8601), when enabled.
    pub expiration: Option<String>,
}

impl TaskProtection {
    /// `agent_uri` as in `ECS_AGENT_URI`, e.g. `http://169.254.170.2/api/0123abcd-...`.
    pub fn new(agent_uri: &str) -> Result<Self, ProtectionError> {
        let bad = || ProtectionError::BadUri(agent_uri.to_string());
        let rest = agent_uri.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(TaskProtection {
            addr,
            host: authority.to_string(),
            path: format!("{base}/task-protection/v1/state"),
            timeout: Duration::from_secs(10),
        })
    }

    /// How long one request may take (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Turn protection on (for `expires`, rounded up to whole minutes, 1 to 2880) or off.
    pub async fn set(
        &self,
        protected: bool,
        expires: Duration,
    ) -> Result<ProtectionState, ProtectionError> {
        let body = if protected {
            let minutes = expires.as_secs().div_ceil(60).clamp(1, MAX_EXPIRY_MINUTES);
            format!(r#"{{"ProtectionEnabled":true,"ExpiresInMinutes":{minutes}}}"#)
        } else {
            r#"{"ProtectionEnabled":false}"#.to_string()
        };
        let (status, text) = self.request("PUT", Some(&body)).await?;
        debug!(status, protected, "task protection set");
        parse_state(status, &text)
    }

    /// The current protection state.
    pub async fn get(&self) -> Result<ProtectionState, ProtectionError> {
        let (status, text) = self.request("GET", None).await?;
        parse_state(status, &text)
    }

    async fn request(
        &self,
        method: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ProtectionError> {
        let io = |message: String| ProtectionError::Io {
            addr: self.addr.clone(),
            message,
        };
        let exchange = async {
            let mut stream = TcpStream::connect(&self.addr).await.map_err(|source| {
                ProtectionError::Connect {
                    addr: self.addr.clone(),
                    source,
                }
            })?;
            let body = body.unwrap_or("");
            let head = format!(
                "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.path,
                self.host,
                body.len()
            );
            stream
                .write_all(head.as_bytes())
                .await
                .map_err(|e| io(e.to_string()))?;
            stream
                .write_all(body.as_bytes())
                .await
                .map_err(|e| io(e.to_string()))?;
            let mut raw = Vec::new();
            stream
                .read_to_end(&mut raw)
                .await
                .map_err(|e| io(e.to_string()))?;
            parse_response(&raw).map_err(|m| io(m.to_string()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| io(format!("no answer within {:?}", self.timeout)))?
    }
}

/// Status code and body of an HTTP/1.1 response read to the end (Connection: close).
fn parse_response(raw: &[u8]) -> Result<(u16, String), &'static str> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "response head is not text")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status code in the response")?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or("malformed chunked body")?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[derive(Deserialize)]
struct Answer {
    protection: Option<Protection>,
    failure: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Protection {
    protection_enabled: bool,
    expiration_date: Option<String>,
}

/// The agent answers `{"protection": {...}}`, or `{"failure": {...}}` / `{"error": {...}}`.
fn parse_state(status: u16, text: &str) -> Result<ProtectionState, ProtectionError> {
    let refused = || ProtectionError::Refused {
        status,
        body: text.trim().to_string(),
    };
    if !(200..300).contains(&status) {
        return Err(refused());
    }
    let answer: Answer = serde_json::from_str(text).map_err(|_| refused())?;
    if answer.failure.is_some() || answer.error.is_some() {
        return Err(refused());
    }
    let p = answer.protection.ok_or_else(refused)?;
    Ok(ProtectionState {
        enabled: p.protection_enabled,
        expiration: p.expiration_date,
    })
}
