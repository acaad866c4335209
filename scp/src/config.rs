//! How the SCP is told who may talk to it and what limits it keeps.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::sop;

/// One entry of the calling-AE allowlist: `AE` (from any host) or `AE@HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCaller {
    pub ae_title: String,
    /// Resolved once at start-up; `None` means any host.
    pub hosts: Option<Vec<IpAddr>>,
    /// `AE[@HOST]#CN`: the caller must present a client certificate (DICOM TLS) with this
    /// common name; `None` means no certificate requirement of this entry.
    pub common_name: Option<String>,
    /// As written, for logs and the conformance statement.
    pub spec: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CallerSpecError {
    #[error("{0:?}: an AE title is 1 to 16 characters of printable ASCII without backslash")]
    BadAeTitle(String),
    #[error("{0:?}: a certificate common name after '#' is 1 to 64 characters")]
    BadCommonName(String),
    #[error("{spec:?}: cannot resolve host {host:?}: {reason}")]
    BadHost {
        spec: String,
        host: String,
        reason: String,
    },
}

/// Check an AE title as PS3.8 9.3.1 and PS3.5 (VR AE) define it (`dimse::AeTitle`).
pub fn valid_ae_title(ae: &str) -> bool {
    dimse::AeTitle::new(ae).is_ok()
}

impl FromStr for AllowedCaller {
    type Err = CallerSpecError;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (caller, common_name) = match spec.split_once('#') {
            Some((caller, cn)) if !cn.trim().is_empty() && cn.len() <= 64 => {
                (caller, Some(cn.trim().to_string()))
            }
            Some(_) => return Err(CallerSpecError::BadCommonName(spec.to_string())),
            None => (spec, None),
        };
        let (ae, host) = match caller.split_once('@') {
            Some((ae, host)) => (ae, Some(host)),
            None => (caller, None),
        };
        if !valid_ae_title(ae) {
            return Err(CallerSpecError::BadAeTitle(ae.to_string()));
        }
        let hosts = match host {
            None => None,
            Some(host) => {
                let resolved: Vec<IpAddr> = match host.parse::<IpAddr>() {
                    Ok(ip) => vec![ip],
                    Err(_) => (host, 0)
                        .to_socket_addrs()
                        .map_err(|e| CallerSpecError::BadHost {
                            spec: spec.into(),
                            host: host.into(),
                            reason: e.to_string(),
                        })?
                        .map(|a| a.ip())
                        .collect(),
                };
                Some(resolved)
            }
        };
        Ok(AllowedCaller {
            ae_title: ae.trim().to_string(),
            hosts,
            common_name,
            spec: spec.to_string(),
        })
    }
}

impl fmt::Display for AllowedCaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl AllowedCaller {
    pub fn admits(&self, calling_ae: &str, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.ae_title == calling_ae.trim() && self.hosts.as_ref().is_none_or(|h| h.contains(&peer))
    }
}

#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// Our AE title; associations calling any other title are rejected.
    pub ae_title: String,
    pub bind: SocketAddr,
    /// Empty: any calling AE from any host. Otherwise only these.
    pub allowed_callers: Vec<AllowedCaller>,
    /// The largest P-DATA PDU we accept (we announce it in the A-ASSOCIATE-AC).
    pub max_pdu_length: u32,
    /// Established associations at once; a slot is taken only after the A-ASSOCIATE-AC.
    pub max_associations: usize,
    /// Connections that have not completed association negotiation, in all and from one IP
    /// address (see `admission`); more are closed at once.
    pub max_pending_associations: usize,
    pub max_pending_per_peer: usize,
    /// How long a peer has to complete association negotiation (PS3.8 ARTIM); also how long
    /// a silent connection holds its pending place.
    pub artim_timeout: Duration,
    /// How long an established association may stay silent before we abort it.
    pub idle_timeout: Duration,
    /// Objects larger than this are refused with 0xA700.
    pub max_object_bytes: u64,
    /// Below this much free space in the spool, new associations are refused and C-STORE
    /// answers 0xA700 until space returns.
    pub min_free_disk_bytes: u64,
    /// A study is complete after this long without a new instance.
    pub quiet_period: Duration,
    /// On shutdown (SIGTERM), how long the listener may spend staging and enqueueing the
    /// studies still in their quiet period before it exits. Keep it below the orchestrator's
    /// stop timeout (ECS `StopTimeout` 120 s in deploy/cloudformation.yaml, less the up to 10 s
    /// spent waiting for open associations). What is not done by then stays in the spool and
    /// the next start (same data folder) emits it. Zero: leave everything to the next start.
    pub drain_time: Duration,
    pub sop_classes: Vec<String>,
    pub transfer_syntaxes: Vec<String>,
    /// Where received instances wait, durably, until their study is staged and enqueued.
    pub spool_dir: PathBuf,
    /// Size of an ingest journal segment (see `journal`); instances up to about this size are
    /// made durable by one append + fdatasync. 0 turns the journal off: every instance is
    /// then written to its own file, fsynced and renamed before its status.
    pub journal_segment_bytes: u64,
    /// Associations accepted and rejected, and studies received, go to the audit trail.
    pub audit: audit::AuditLog,
    /// Listen for plain TCP on `bind` (the default). Off: the TLS listener only.
    pub plain: bool,
    /// DICOM TLS on its own address (see [`crate::tls`]).
    pub tls: Option<TlsListen>,
}

/// The TLS listener: where, and with which certificate (and client CA).
#[derive(Clone)]
pub struct TlsListen {
    pub bind: SocketAddr,
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// A client certificate is required (mutual TLS); for logs and the audit trail.
    pub client_certificates_required: bool,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen")
            .field("bind", &self.bind)
            .field(
                "client_certificates_required",
                &self.client_certificates_required,
            )
            .finish_non_exhaustive()
    }
}

impl ScpConfig {
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        ScpConfig {
            ae_title: "SEGNODE".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 11112)),
            allowed_callers: Vec::new(),
            max_pdu_length: 131_072,
            max_associations: 16,
            max_pending_associations: 64,
            max_pending_per_peer: 8,
            artim_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_object_bytes: 2 * 1024 * 1024 * 1024,
            min_free_disk_bytes: 1024 * 1024 * 1024,
            quiet_period: Duration::from_secs(10),
            drain_time: Duration::from_secs(60),
            sop_classes: sop::default_sop_classes(),
            transfer_syntaxes: sop::default_transfer_syntaxes(),
            spool_dir: spool_dir.into(),
            journal_segment_bytes: 16 * 1024 * 1024,
            audit: audit::AuditLog::disabled(),
            plain: true,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_entries() {
        let any_host: AllowedCaller = "SCANNER1".parse().unwrap();
        assert!(any_host.admits("SCANNER1", "10.0.0.7".parse().unwrap()));
        assert!(!any_host.admits("SCANNER2", "10.0.0.7".parse().unwrap()));
        let pinned: AllowedCaller = "PACS@127.0.0.1".parse().unwrap();
        assert!(pinned.admits("PACS", "127.0.0.1".parse().unwrap()));
        assert!(pinned.admits("PACS", "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!pinned.admits("PACS", "127.0.0.2".parse().unwrap()));
        assert!("".parse::<AllowedCaller>().is_err());
        assert!("WAY_TOO_LONG_AE_TITLE".parse::<AllowedCaller>().is_err());
        assert!("A\\B".parse::<AllowedCaller>().is_err());
        let with_cn: AllowedCaller = "PACS@127.0.0.1#pacs1.example.org".parse().unwrap();
        assert_eq!(with_cn.ae_title, "PACS");
        assert_eq!(with_cn.common_name.as_deref(), Some("pacs1.example.org"));
        assert!(with_cn.admits("PACS", "127.0.0.1".parse().unwrap()));
        let any_host_cn: AllowedCaller = "PACS#pacs1".parse().unwrap();
        assert_eq!(any_host_cn.hosts, None);
        assert!("PACS#".parse::<AllowedCaller>().is_err());
    }
}
