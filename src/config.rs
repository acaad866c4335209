//! Configuration: defaults, then the TOML file (`--config`), then environment variables and
//! flags (clap gives flags precedence over `SEGNODE_*` variables). One struct, one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use scp::{AllowedCaller, ScpConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub node: NodeSection,
    pub scp: ScpSection,
    pub queue: QueueSection,
    pub aws: AwsSection,
    pub worker: WorkerSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Model folder (holding model.toml); default: the bundled brats-synth-unet2d.
    pub model: Option<PathBuf>,
    /// Worker tasks in this process (`serve`, `worker`); they share one model.
    pub workers: usize,
    /// Slices of one study run through the network at once, one thread each (per worker);
    /// 0 = the cores this process may use divided by `workers` (at least 1).
    pub inference_threads: usize,
    /// Destinations every SEG is sent to: `AET@HOST:PORT` (C-STORE) or a DICOMweb base URL
    /// `http(s)://HOST[:PORT]/PATH` (STOW-RS).
    pub destinations: Vec<String>,
    /// Deliver the volumes as a DICOM SR (TID 1500) with the SEG.
    pub volume_report: bool,
    /// PEM CA file for https:// destinations (default: the system's roots).
    pub dicomweb_ca_file: Option<PathBuf>,
    /// `dicom-tls://` destinations: the CA to trust (default: the system's roots), and our
    /// client certificate and key for destinations that require mutual TLS (PEM).
    pub destination_tls_ca: Option<PathBuf>,
    pub destination_tls_cert: Option<PathBuf>,
    pub destination_tls_key: Option<PathBuf>,
    /// Our AE title when sending; default: the SCP's AE title.
    pub calling_ae_title: Option<String>,
    /// Seconds a job stays hidden per heartbeat; above the p99 job time.
    pub visibility_timeout_secs: f64,
    /// Seconds before a failed job is tried again.
    pub retry_delay_secs: f64,
    /// C-STORE attempts per destination within one job attempt, and the first backoff.
    pub delivery_attempts: u32,
    pub delivery_backoff_secs: f64,
    pub delivery_timeout_secs: f64,
    /// Seconds shutdown waits for a job in progress before handing it back to the queue.
    pub shutdown_grace_secs: f64,
    /// Seconds one attempt at a job may take before it is abandoned (released or dead-lettered).
    pub job_deadline_secs: f64,
    /// Most MiB one S3 upload may hold (the zip, and its files uncompressed; or the folder).
    pub max_upload_mb: u64,
    /// Most files in one S3 upload (zip entries or folder objects).
    pub max_upload_files: usize,
    /// Voxel values of NIfTI label maps, one per model segment in manifest order (BraTS
    /// 2018-2021: `[1, 2, 4]`); absent: the manifest's label values (BraTS 2023: 1, 2, 3).
    pub nifti_labels: Option<Vec<u8>>,
}

impl Default for WorkerSection {
    fn default() -> Self {
        WorkerSection {
            model: None,
            workers: 1,
            inference_threads: 0,
            destinations: Vec::new(),
            volume_report: true,
            dicomweb_ca_file: None,
            destination_tls_ca: None,
            destination_tls_cert: None,
            destination_tls_key: None,
            calling_ae_title: None,
            visibility_timeout_secs: 120.0,
            retry_delay_secs: 10.0,
            delivery_attempts: 3,
            delivery_backoff_secs: 2.0,
            delivery_timeout_secs: 30.0,
            shutdown_grace_secs: 60.0,
            job_deadline_secs: segmenter::worker::DEFAULT_JOB_DEADLINE.as_secs_f64(),
            // The expansion streams through disk; segmentation then holds the study's
            // instances: 1 GiB fits deploy/cloudformation.yaml's 4 GiB WorkerMemory.
            max_upload_mb: 1024,
            max_upload_files: 10_000,
            nifti_labels: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Spool, local store and SQLite queue live here (`segnode serve`); only the spool for `segnode scp`.
    pub data_dir: PathBuf,
    /// `/metrics` and `/healthz`; empty to disable.
    pub http: String,
    /// The audit trail (JSON lines; `-` for standard output); none when unset.
    pub audit_log: Option<PathBuf>,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            data_dir: PathBuf::from("segnode-data"),
            http: "127.0.0.1:11180".into(),
            audit_log: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScpSection {
    pub ae_title: String,
    pub bind: String,
    pub port: u16,
    /// `AE` or `AE@HOST`; empty = any caller.
    pub allowed_callers: Vec<String>,
    pub max_pdu: u32,
    pub max_associations: usize,
    pub artim_timeout_secs: f64,
    pub idle_timeout_secs: f64,
    pub max_object_mb: u64,
    pub min_free_disk_mb: u64,
    /// Ingest journal segment size in MiB; 0 = a file, fsync and rename per instance.
    pub journal_segment_mb: u64,
    pub quiet_period_secs: f64,
    /// Seconds spent on SIGTERM staging studies still in their quiet period (below the
    /// orchestrator's stop timeout); 0 leaves them to the next start.
    pub drain_time_secs: f64,
    /// Override the accepted storage SOP classes (UIDs).
    pub sop_classes: Option<Vec<String>>,
    /// Override the accepted transfer syntaxes (UIDs).
    pub transfer_syntaxes: Option<Vec<String>>,
    /// DICOM TLS: certificate chain and private key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Port of the TLS listener (2762, the registered DICOM-TLS port), on `bind`.
    pub tls_port: u16,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    pub tls_client_ca: Option<PathBuf>,
    /// The same three as PEM text instead of files (secrets injected as variables).
    #[serde(skip)]
    pub tls_cert_pem: Option<String>,
    #[serde(skip)]
    pub tls_key_pem: Option<String>,
    #[serde(skip)]
    pub tls_client_ca_pem: Option<String>,
    /// Listen on a non-loopback address without an allowlist or a TLS client CA (a firewall or
    /// security group decides who can reach the port).
    pub allow_any_caller: bool,
}

impl Default for ScpSection {
    fn default() -> Self {
        let d = ScpConfig::new("");
        ScpSection {
            ae_title: d.ae_title,
            bind: "127.0.0.1".into(),
            port: 11112,
            allowed_callers: Vec::new(),
            max_pdu: d.max_pdu_length,
            max_associations: d.max_associations,
            artim_timeout_secs: d.artim_timeout.as_secs_f64(),
            idle_timeout_secs: d.idle_timeout.as_secs_f64(),
            max_object_mb: d.max_object_bytes / (1024 * 1024),
            min_free_disk_mb: d.min_free_disk_bytes / (1024 * 1024),
            journal_segment_mb: d.journal_segment_bytes / (1024 * 1024),
            quiet_period_secs: d.quiet_period.as_secs_f64(),
            drain_time_secs: d.drain_time.as_secs_f64(),
            sop_classes: None,
            transfer_syntaxes: None,
            tls_cert: None,
            tls_key: None,
            tls_port: 2762,
            tls_client_ca: None,
            tls_cert_pem: None,
            tls_key_pem: None,
            tls_client_ca_pem: None,
            allow_any_caller: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// Receives before a job goes to the dead-letter queue (SQLite; for SQS it must match the redrive policy).
    pub max_receives: u32,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection { max_receives: 3 }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSection {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub force_path_style: bool,
    pub queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    /// `file:///PATH`: objects are read and written in this folder instead of the bucket (an
    /// FSx for Lustre file system linked to it; jobs still come from SQS). See deploy/README.md.
    pub store: Option<String>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn scp_config(&self) -> Result<ScpConfig> {
        let s = &self.scp;
        let mut c = ScpConfig::new(self.node.data_dir.join("spool"));
        c.ae_title = s.ae_title.clone();
        let addr = format!("{}:{}", s.bind, s.port);
        c.bind = addr
            .parse::<SocketAddr>()
            .with_context(|| format!("invalid listen address {addr}"))?;
        c.allowed_callers = s
            .allowed_callers
            .iter()
            .map(|spec| {
                spec.parse::<AllowedCaller>()
                    .with_context(|| format!("invalid --allow-calling {spec:?}"))
            })
            .collect::<Result<_>>()?;
        if !(4096..=16 * 1024 * 1024).contains(&s.max_pdu) {
            bail!("max PDU {} is outside 4096..=16777216", s.max_pdu);
        }
        c.max_pdu_length = s.max_pdu;
        if s.max_associations == 0 {
            bail!("max associations must be at least 1");
        }
        c.max_associations = s.max_associations;
        c.artim_timeout = secs(s.artim_timeout_secs, "ARTIM timeout")?;
        c.idle_timeout = secs(s.idle_timeout_secs, "idle timeout")?;
        c.quiet_period = secs(s.quiet_period_secs, "quiet period")?;
        c.drain_time = secs(s.drain_time_secs, "drain time")?;
        c.max_object_bytes = s.max_object_mb.saturating_mul(1024 * 1024);
        c.min_free_disk_bytes = s.min_free_disk_mb.saturating_mul(1024 * 1024);
        c.journal_segment_bytes = s.journal_segment_mb.saturating_mul(1024 * 1024);
        if let Some(v) = &s.sop_classes {
            c.sop_classes = v.clone();
        }
        if let Some(v) = &s.transfer_syntaxes {
            c.transfer_syntaxes = v.clone();
        }
        use scp::tls::Pem;
        let pem = |file: &Option<PathBuf>, text: &Option<String>, var: &str| match (file, text) {
            (Some(f), _) => Some(Pem::File(f.clone())),
            (None, Some(t)) => Some(Pem::Inline {
                name: var.to_string(),
                text: t.clone(),
            }),
            (None, None) => None,
        };
        let cert = pem(&s.tls_cert, &s.tls_cert_pem, "SEGNODE_TLS_CERT_PEM");
        let key = pem(&s.tls_key, &s.tls_key_pem, "SEGNODE_TLS_KEY_PEM");
        let ca = pem(
            &s.tls_client_ca,
            &s.tls_client_ca_pem,
            "SEGNODE_TLS_CLIENT_CA_PEM",
        );
        c.tls = match (cert, key) {
            (None, None) => {
                if ca.is_some() {
                    bail!("--tls-client-ca needs --tls-cert and --tls-key (a TLS listener)");
                }
                None
            }
            (Some(cert), Some(key)) => {
                let addr = format!("{}:{}", s.bind, s.tls_port);
                let config =
                    scp::tls::server_config_from(&cert, &key, ca.as_ref()).context("DICOM TLS")?;
                Some(scp::config::TlsListen {
                    bind: addr
                        .parse::<SocketAddr>()
                        .with_context(|| format!("invalid TLS listen address {addr}"))?,
                    config,
                    client_certificates_required: ca.is_some(),
                })
            }
            _ => bail!("DICOM TLS needs both a certificate and its key (--tls-cert, --tls-key)"),
        };
        // With TLS, `--port 0` turns plain TCP off; without, port 0 is any free port.
        c.plain = !(c.tls.is_some() && s.port == 0);
        check_exposure(&c, s.allow_any_caller)?;
        Ok(c)
    }
}

/// Safe by default: the listener binds 127.0.0.1 unless told otherwise, and refuses to listen on
/// any other address for *any* caller. On a reachable address it needs an allowlist
/// (`--allow-calling`), mutual TLS (`--tls-client-ca`), or `--allow-any-caller` (a firewall or
/// security group already decides who can reach the port; the CloudFormation stack says so).
fn check_exposure(c: &ScpConfig, allow_any_caller: bool) -> Result<()> {
    let mut addrs = Vec::new();
    if c.plain {
        addrs.push(c.bind);
    }
    if let Some(t) = &c.tls {
        addrs.push(t.bind);
    }
    let mutual_tls = c
        .tls
        .as_ref()
        .is_some_and(|t| t.client_certificates_required);
    for addr in addrs {
        if addr.ip().is_loopback() || allow_any_caller || !c.allowed_callers.is_empty() {
            continue;
        }
        // Mutual TLS guards the TLS port only; a plain port beside it is still open to anyone.
        if mutual_tls && c.tls.as_ref().is_some_and(|t| t.bind == addr) {
            continue;
        }
        bail!(
            "refusing to listen on {addr} for any caller: name who may send with --allow-calling \
             AE[@HOST] (repeatable), require client certificates with --tls-client-ca (TLS port \
             only), or pass --allow-any-caller if a firewall already restricts who can reach it"
        );
    }
    Ok(())
}

pub fn secs(v: f64, what: &str) -> Result<Duration> {
    if !(v.is_finite() && (0.0..1e7).contains(&v)) {
        bail!("{what} of {v} seconds is not a sensible duration");
    }
    Ok(Duration::from_secs_f64(v))
}
