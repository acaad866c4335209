//! A deliberately tiny HTTP/1.1 endpoint for `/metrics` (Prometheus text) and `/healthz`.
//! Two GET routes do not justify a web framework in the binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use staging::logsafe::RateLimited;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Concurrent HTTP connections; more are closed at once (scrapes and probes need a few).
pub const MAX_CONNECTIONS: usize = 32;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the endpoint serves: a function rendering the metrics text, and one answering health.
pub struct Endpoints {
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    pub health: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
}

pub async fn serve(addr: SocketAddr, endpoints: Arc<Endpoints>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {addr}: {e}"))?;
    info!(addr = %listener.local_addr()?, "metrics and health endpoint ready");
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let failed_log = RateLimited::new(Duration::from_secs(10));
    let mut backoff = MIN_BACKOFF;
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(s) => {
                backoff = MIN_BACKOFF;
                s
            }
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: the error repeats at once,
                // so wait (doubling up to a second) and log it a few times a minute only.
                if let Some(suppressed) = failed_log.allow() {
                    warn!(error = %e, suppressed, retry_in = ?backoff, "HTTP accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // over the cap: close at once rather than hold a descriptor and a task
            drop(socket);
            continue;
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match socket.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", (endpoints.metrics)()),
                "/healthz" => match (endpoints.health)() {
                    Ok(b) => ("200 OK", "text/plain", b),
                    Err(b) => ("503 Service Unavailable", "text/plain", b),
                },
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics or /healthz\n".to_string(),
                ),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
