//! `segnode`: the binary owns configuration, logging, exit codes and the wiring of the rooms.
#![forbid(unsafe_code)]

mod audit_cmd;
mod config;
mod demo;
mod http;
mod model_cmd;
mod nifti_cmd;
mod scaler_cmd;
mod segment_cmd;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use config::FileConfig;
use scp::Scp;
use segmenter::worker::WorkerPool;
#[cfg(feature = "aws")]
use staging::{AwsSettings, S3Settings, S3Store, SqsQueue, SqsSettings};
use staging::{JobQueue, LocalStore, ObjectStore, SqliteQueue};
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "segnode",
    version,
    about = "A DICOM node that segments brain tumours in MR studies and returns DICOM-SEG"
)]
struct Cli {
    /// TOML configuration file; flags and SEGNODE_* environment variables override it.
    #[arg(long, global = true, env = "SEGNODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node on embedded defaults: DICOM listener, local store and SQLite queue under --data-dir.
    Serve(ServeArgs),
    /// Run only the DICOM listener, staging to S3 and enqueueing on SQS (the at-scale entry point).
    Scp(ScpOnlyArgs),
    /// Run only workers: take jobs from SQS, read studies from S3, deliver SEGs (the at-scale worker).
    Worker(WorkerOnlyArgs),
    /// Segment one study from a folder of DICOM files, offline (no network, no queue).
    Segment(segment_cmd::SegmentArgs),
    /// Start the node on embedded defaults, send it the bundled synthetic study, receive the SEG and
    /// report timings, tumour volumes, Dice against the ground truth and a PNG montage.
    Demo(demo::DemoArgs),
    /// Size the workers by queue backlog: `run` (loop), `tick` (one evaluation), `simulate`.
    Scaler(scaler_cmd::ScalerArgs),
    /// Bring your own model: `check DIR` validates a model folder and measures it.
    Model(model_cmd::ModelArgs),
    /// Read audit logs: who sent a study and where its result went (`--study UID`).
    Audit(audit_cmd::AuditArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// Model folder (holding model.toml); default: the bundled brats-synth-unet2d.
    #[arg(long, env = "SEGNODE_MODEL")]
    model: Option<PathBuf>,
    /// Worker tasks in this process (0: none, e.g. for a scaler to start).
    #[arg(long, env = "SEGNODE_WORKERS")]
    workers: Option<usize>,
    /// Threads per worker for inference: this many slices of a study run at once
    /// (default: the cores available divided by the workers).
    #[arg(long, env = "SEGNODE_INFERENCE_THREADS")]
    inference_threads: Option<usize>,
    /// Send every SEG to this AET@HOST:PORT (C-STORE), dicom-tls://AET@HOST:PORT (C-STORE over
    /// DICOM TLS) or DICOMweb base URL (http(s)://HOST[:PORT]/PATH, STOW-RS); repeatable.
    #[arg(
        long = "destination",
        value_name = "AET@HOST:PORT|URL",
        env = "SEGNODE_DESTINATIONS",
        value_delimiter = ','
    )]
    destinations: Vec<String>,
    /// Seconds a job stays hidden from other workers per heartbeat.
    #[arg(long, env = "SEGNODE_VISIBILITY_TIMEOUT")]
    visibility_timeout: Option<f64>,
    /// Seconds before a failed job is tried again.
    #[arg(long, env = "SEGNODE_RETRY_DELAY")]
    retry_delay: Option<f64>,
    /// Seconds one attempt at a job may take before it is abandoned (default 1800).
    #[arg(long, env = "SEGNODE_JOB_DEADLINE")]
    job_deadline: Option<f64>,
    /// C-STORE attempts per destination within one job attempt.
    #[arg(long, env = "SEGNODE_DELIVERY_ATTEMPTS")]
    delivery_attempts: Option<u32>,
    /// Seconds before the second C-STORE attempt (doubled each time).
    #[arg(long, env = "SEGNODE_DELIVERY_BACKOFF")]
    delivery_backoff: Option<f64>,
    /// Do not write or deliver the volume report (TID 1500 SR) with the SEG.
    #[arg(long, env = "SEGNODE_NO_VOLUME_REPORT")]
    no_volume_report: bool,
    /// PEM file of the CA(s) trusted for https:// destinations (default: the system's roots).
    /// Credentials come from SEGNODE_DICOMWEB_TOKEN (bearer) or SEGNODE_DICOMWEB_USER and
    /// SEGNODE_DICOMWEB_PASSWORD (basic).
    #[arg(long, env = "SEGNODE_DICOMWEB_CA_FILE")]
    dicomweb_ca_file: Option<PathBuf>,
    /// PEM file of the CA(s) trusted for dicom-tls:// destinations (default: the system's roots).
    #[arg(long, value_name = "FILE", env = "SEGNODE_DESTINATION_TLS_CA")]
    destination_tls_ca: Option<PathBuf>,
    /// Our client certificate (PEM) for dicom-tls:// destinations that require mutual TLS.
    #[arg(long, value_name = "FILE", env = "SEGNODE_DESTINATION_TLS_CERT")]
    destination_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --destination-tls-cert.
    #[arg(long, value_name = "FILE", env = "SEGNODE_DESTINATION_TLS_KEY")]
    destination_tls_key: Option<PathBuf>,
    /// Most MiB an uploaded study (uploads/*.zip or folder) may hold, uncompressed.
    #[arg(long, env = "SEGNODE_MAX_UPLOAD_MB")]
    max_upload_mb: Option<u64>,
    /// Most files an uploaded study may hold.
    #[arg(long, env = "SEGNODE_MAX_UPLOAD_FILES")]
    max_upload_files: Option<usize>,
    /// Voxel values written into NIfTI label maps, one per model segment (e.g. 1,2,4 for
    /// BraTS 2018-2021; default: the model's labels, 1,2,3 as in BraTS 2023).
    #[arg(long, env = "SEGNODE_NIFTI_LABELS", value_delimiter = ',')]
    nifti_labels: Vec<u8>,
}

impl WorkerArgs {
    fn apply(&self, f: &mut FileConfig) {
        let w = &mut f.worker;
        if self.model.is_some() {
            w.model = self.model.clone();
        }
        if let Some(v) = self.workers {
            w.workers = v;
        }
        if let Some(v) = self.inference_threads {
            w.inference_threads = v;
        }
        if !self.destinations.is_empty() {
            w.destinations = self.destinations.clone();
        }
        if let Some(v) = self.visibility_timeout {
            w.visibility_timeout_secs = v;
        }
        if let Some(v) = self.retry_delay {
            w.retry_delay_secs = v;
        }
        if let Some(v) = self.job_deadline {
            w.job_deadline_secs = v;
        }
        if let Some(v) = self.delivery_attempts {
            w.delivery_attempts = v;
        }
        if let Some(v) = self.delivery_backoff {
            w.delivery_backoff_secs = v;
        }
        if self.no_volume_report {
            w.volume_report = false;
        }
        if self.dicomweb_ca_file.is_some() {
            w.dicomweb_ca_file = self.dicomweb_ca_file.clone();
        }
        if self.destination_tls_ca.is_some() {
            w.destination_tls_ca = self.destination_tls_ca.clone();
        }
        if self.destination_tls_cert.is_some() {
            w.destination_tls_cert = self.destination_tls_cert.clone();
        }
        if self.destination_tls_key.is_some() {
            w.destination_tls_key = self.destination_tls_key.clone();
        }
        if let Some(v) = self.max_upload_mb {
            w.max_upload_mb = v;
        }
        if let Some(v) = self.max_upload_files {
            w.max_upload_files = v;
        }
        if !self.nifti_labels.is_empty() {
            w.nifti_labels = Some(self.nifti_labels.clone());
        }
    }
}

#[derive(Args, Debug)]
struct WorkerOnlyArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// Folder for the spool (and, for `serve`, the local store and the SQLite queue).
    #[arg(long, env = "SEGNODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the /metrics and /healthz endpoint ("off" to disable).
    #[arg(long, env = "SEGNODE_HTTP")]
    http: Option<String>,
    /// Our AE title; associations calling any other are rejected.
    #[arg(long = "aet", env = "SEGNODE_AET")]
    ae_title: Option<String>,
    /// DICOM port to listen on (plain TCP). With --tls-cert, 0 turns plain TCP off.
    #[arg(long, env = "SEGNODE_PORT")]
    port: Option<u16>,
    /// DICOM TLS: this certificate chain (PEM) on --tls-port (with --tls-key).
    #[arg(long, value_name = "FILE", env = "SEGNODE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// DICOM TLS: the private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", env = "SEGNODE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Port of the DICOM TLS listener (default 2762, the registered DICOM-TLS port).
    #[arg(long, env = "SEGNODE_TLS_PORT")]
    tls_port: Option<u16>,
    /// Require a client certificate signed by this CA (PEM) on the TLS port (mutual TLS).
    /// Allowlist entries `AE[@HOST]#CN` also require that certificate common name.
    #[arg(long, value_name = "FILE", env = "SEGNODE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// --tls-cert's PEM text itself (for a secret injected as a variable; a file wins).
    #[arg(
        long,
        value_name = "PEM",
        env = "SEGNODE_TLS_CERT_PEM",
        hide_env_values = true
    )]
    tls_cert_pem: Option<String>,
    /// --tls-key's PEM text itself (for a secret injected as a variable; a file wins).
    #[arg(
        long,
        value_name = "PEM",
        env = "SEGNODE_TLS_KEY_PEM",
        hide_env_values = true
    )]
    tls_key_pem: Option<String>,
    /// --tls-client-ca's PEM text itself (a file wins).
    #[arg(
        long,
        value_name = "PEM",
        env = "SEGNODE_TLS_CLIENT_CA_PEM",
        hide_env_values = true
    )]
    tls_client_ca_pem: Option<String>,
    /// Address to listen on (default 127.0.0.1; e.g. 0.0.0.0 for every interface, which then
    /// needs --allow-calling, --tls-client-ca or --allow-any-caller).
    #[arg(long, env = "SEGNODE_BIND")]
    bind: Option<String>,
    /// Listen on a non-loopback address for any caller that calls our AE title, without an
    /// allowlist or client certificates (when a firewall decides who can reach the port).
    #[arg(long, env = "SEGNODE_ALLOW_ANY_CALLER")]
    allow_any_caller: bool,
    /// Seconds without a new instance after which a study is complete.
    #[arg(long, env = "SEGNODE_QUIET_PERIOD")]
    quiet_period: Option<f64>,
    /// Seconds spent on SIGTERM staging studies still in their quiet period (default 60;
    /// 0: leave them in the spool for the next start).
    #[arg(long, env = "SEGNODE_DRAIN_TIME")]
    drain_time: Option<f64>,
    /// Allow this calling AE (optionally only from HOST); repeatable. Without any, all callers are allowed.
    #[arg(
        long = "allow-calling",
        value_name = "AE[@HOST]",
        env = "SEGNODE_ALLOW_CALLING",
        value_delimiter = ','
    )]
    allow_calling: Vec<String>,
    /// Maximum concurrent associations; more are rejected (transient, local limit exceeded).
    #[arg(long, env = "SEGNODE_MAX_ASSOCIATIONS")]
    max_associations: Option<usize>,
    /// Maximum PDU length we receive.
    #[arg(long, env = "SEGNODE_MAX_PDU")]
    max_pdu: Option<u32>,
    /// Seconds a peer has to complete association negotiation.
    #[arg(long, env = "SEGNODE_ARTIM_TIMEOUT")]
    artim_timeout: Option<f64>,
    /// Seconds an association may stay silent before it is aborted.
    #[arg(long, env = "SEGNODE_IDLE_TIMEOUT")]
    idle_timeout: Option<f64>,
    /// Refuse objects larger than this many MiB (0xA700).
    #[arg(long, env = "SEGNODE_MAX_OBJECT_MB")]
    max_object_mb: Option<u64>,
    /// Below this many MiB free in the data dir, refuse associations and answer C-STORE with 0xA700.
    #[arg(long, env = "SEGNODE_MIN_FREE_DISK_MB")]
    min_free_disk_mb: Option<u64>,
    /// Ingest journal segment size in MiB (default 16): instances up to about this size are made
    /// durable by one append + fdatasync; 0 = one file, fsync and rename per instance.
    #[arg(long, env = "SEGNODE_JOURNAL_SEGMENT_MB")]
    journal_segment_mb: Option<u64>,
    /// Receives before a job is dead-lettered.
    #[arg(long, env = "SEGNODE_MAX_RECEIVES")]
    max_receives: Option<u32>,
    /// Append the audit trail (JSON lines: associations, studies received, jobs, deliveries;
    /// docs/AUDIT.md) to this file; `-` writes it to standard output.
    #[arg(long, value_name = "FILE", env = "SEGNODE_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Size the worker pool by queue backlog (the scaler's policy, in process); --workers is then
    /// the starting size.
    #[arg(long, env = "SEGNODE_AUTOSCALE")]
    autoscale: bool,
    /// Seconds between two scaling decisions with --autoscale.
    #[arg(long, default_value_t = 5.0, env = "SEGNODE_SCALE_INTERVAL")]
    scale_interval: f64,
    #[command(flatten)]
    policy: scaler_cmd::PolicyArgs,
}

#[derive(Args, Debug)]
struct ScpOnlyArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    aws: AwsArgs,
}

#[derive(Args, Debug, Clone)]
struct AwsArgs {
    /// S3 bucket for staging (incoming/) and results (results/).
    #[arg(long, env = "SEGNODE_BUCKET")]
    bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, env = "SEGNODE_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// Use path-style S3 addressing (moto, S3-compatible stores).
    #[arg(long, env = "SEGNODE_S3_PATH_STYLE")]
    path_style: bool,
    /// SQS job queue URL.
    #[arg(long, env = "SEGNODE_QUEUE_URL")]
    queue_url: Option<String>,
    /// SQS dead-letter queue URL (the redrive target).
    #[arg(long, env = "SEGNODE_DLQ_URL")]
    dlq_url: Option<String>,
    /// Override the AWS endpoint (e.g. a moto server).
    #[arg(long, env = "SEGNODE_AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    #[arg(long, env = "SEGNODE_AWS_REGION")]
    region: Option<String>,
    /// file:///PATH: read and write objects in this folder instead of the bucket (a mounted
    /// FSx for Lustre file system linked to it); jobs still come from SQS.
    #[arg(long, env = "SEGNODE_STORE")]
    store: Option<String>,
}

impl NodeArgs {
    fn apply(&self, f: &mut FileConfig) {
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value.clone() {
                    $field = v;
                }
            };
        }
        set!(f.node.data_dir, self.data_dir);
        set!(f.node.http, self.http);
        if self.audit_log.is_some() {
            f.node.audit_log = self.audit_log.clone();
        }
        set!(f.scp.ae_title, self.ae_title);
        set!(f.scp.port, self.port);
        set!(f.scp.tls_port, self.tls_port);
        if self.tls_cert.is_some() {
            f.scp.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            f.scp.tls_key = self.tls_key.clone();
        }
        if self.tls_client_ca.is_some() {
            f.scp.tls_client_ca = self.tls_client_ca.clone();
        }
        if self.tls_cert_pem.is_some() {
            f.scp.tls_cert_pem = self.tls_cert_pem.clone();
        }
        if self.tls_key_pem.is_some() {
            f.scp.tls_key_pem = self.tls_key_pem.clone();
        }
        if self.tls_client_ca_pem.is_some() {
            f.scp.tls_client_ca_pem = self.tls_client_ca_pem.clone();
        }
        set!(f.scp.bind, self.bind);
        if self.allow_any_caller {
            f.scp.allow_any_caller = true;
        }
        set!(f.scp.quiet_period_secs, self.quiet_period);
        set!(f.scp.drain_time_secs, self.drain_time);
        set!(f.scp.max_associations, self.max_associations);
        set!(f.scp.max_pdu, self.max_pdu);
        set!(f.scp.artim_timeout_secs, self.artim_timeout);
        set!(f.scp.idle_timeout_secs, self.idle_timeout);
        set!(f.scp.max_object_mb, self.max_object_mb);
        set!(f.scp.min_free_disk_mb, self.min_free_disk_mb);
        set!(f.scp.journal_segment_mb, self.journal_segment_mb);
        set!(f.queue.max_receives, self.max_receives);
        if !self.allow_calling.is_empty() {
            f.scp.allowed_callers = self.allow_calling.clone();
        }
    }
}

impl AwsArgs {
    fn apply(&self, f: &mut FileConfig) {
        let a = &mut f.aws;
        if self.bucket.is_some() {
            a.bucket = self.bucket.clone();
        }
        if let Some(p) = &self.s3_prefix {
            a.prefix = p.clone();
        }
        a.force_path_style |= self.path_style;
        if self.queue_url.is_some() {
            a.queue_url = self.queue_url.clone();
        }
        if self.dlq_url.is_some() {
            a.dead_letter_queue_url = self.dlq_url.clone();
        }
        if self.endpoint_url.is_some() {
            a.endpoint_url = self.endpoint_url.clone();
        }
        if self.region.is_some() {
            a.region = self.region.clone();
        }
        if self.store.is_some() {
            a.store = self.store.clone();
        }
    }
}

fn main() {
    // dicom-rs reports the end of every data set it parses (each DIMSE command, each header we
    // check) as an error it then swallows, and with RUST_BACKTRACE=1 each such error captures a
    // stack trace: measurable per instance (perf: _Unwind_Find_FDE). Keep panics' backtraces
    // (RUST_BACKTRACE) but not library errors', unless RUST_LIB_BACKTRACE says otherwise.
    // Set before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match demo_log_file(&cli) {
        // The demo prints its own progress; the node's log lines go to a file unless -v.
        Some(Ok(file)) => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        Some(Err(e)) => {
            eprintln!("segnode: {e:#}");
            std::process::exit(1);
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            // Colours only on a terminal: log files and journald get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        error!("{e:#}");
        eprintln!("segnode: {e:#}");
        std::process::exit(1);
    }
}

/// The demo's log file (`--log`, truncated), unless `-v` sends the log to stderr.
fn demo_log_file(cli: &Cli) -> Option<Result<std::fs::File>> {
    match &cli.command {
        Command::Demo(args) if !args.verbose => Some(
            std::fs::File::create(&args.log)
                .with_context(|| format!("cannot write the log file {}", args.log.display())),
        ),
        _ => None,
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            args.node.apply(&mut file);
            args.worker.apply(&mut file);
            let (store, queue) = local_backends(&file)?;
            let audit = open_audit(&file, "serve", true, true)?;
            let shutdown = shutdown_channel();
            // `--workers 0`: a listener only (jobs wait on the queue for workers elsewhere).
            let pool = if file.worker.workers > 0 || args.autoscale {
                Some(workers::start_pool(
                    &file,
                    store.clone(),
                    queue.clone(),
                    shutdown.clone(),
                    audit.clone(),
                )?)
            } else {
                None
            };
            let scaler_metrics = match (&pool, args.autoscale) {
                (Some(pool), true) => Some(workers::start_local_scaler(
                    pool.clone(),
                    queue.clone(),
                    args.policy.config()?,
                    config::secs(args.scale_interval, "scale interval")?
                        .max(std::time::Duration::from_millis(100)),
                    shutdown.clone(),
                )),
                _ => None,
            };
            let listener = Listener {
                pool: pool.clone(),
                scaler: scaler_metrics,
                audit,
            };
            run_scp(&file, store, queue, listener, shutdown).await?;
            if let Some(pool) = pool {
                pool.join().await;
            }
            info!("stopped");
            Ok(())
        }
        Command::Scp(args) => {
            args.node.apply(&mut file);
            args.aws.apply(&mut file);
            let (store, queue) = aws_backends(&file).await?;
            let listener = Listener {
                audit: open_audit(&file, "scp", true, false)?,
                ..Listener::default()
            };
            run_scp(&file, store, queue, listener, shutdown_channel()).await?;
            info!("stopped");
            Ok(())
        }
        Command::Worker(args) => {
            args.node.apply(&mut file);
            args.worker.apply(&mut file);
            args.aws.apply(&mut file);
            let (store, queue) = aws_backends(&file).await?;
            let audit = open_audit(&file, "worker", false, true)?;
            let shutdown = shutdown_channel();
            let pool = workers::start_pool(&file, store, queue.clone(), shutdown.clone(), audit)?;
            serve_http(&file, queue, None, Some(pool.clone()), None)?;
            wait_for(shutdown).await;
            pool.join().await;
            info!("stopped");
            Ok(())
        }
        Command::Segment(args) => segment_cmd::run(args, &mut file),
        Command::Demo(args) => demo::run(args, &mut file).await,
        Command::Scaler(args) => scaler_cmd::run(args, &file).await,
        Command::Model(args) => model_cmd::run(args),
        Command::Audit(args) => audit_cmd::run(args),
    }
}

/// Opens `--audit-log` (if given) and records the configuration this process runs with.
fn open_audit(
    file: &FileConfig,
    role: &str,
    listener: bool,
    workers: bool,
) -> Result<audit::AuditLog> {
    let Some(path) = &file.node.audit_log else {
        return Ok(audit::AuditLog::disabled());
    };
    // The host name names the task at scale (several processes, one trail).
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let log = audit::AuditLog::open(path, node)?;
    let destinations = if workers {
        workers::worker_config(file)?
            .destinations
            .iter()
            .map(|d| d.to_string())
            .collect()
    } else {
        Vec::new()
    };
    log.record(audit::Event::ConfigLoaded {
        role: role.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ae_title: listener.then(|| file.scp.ae_title.clone()),
        listeners: if listener {
            let s = &file.scp;
            let tls = s.tls_cert.is_some() || s.tls_cert_pem.is_some();
            let mut l = Vec::new();
            if !(tls && s.port == 0) {
                l.push(format!("dicom {}:{}", s.bind, s.port));
            }
            if tls {
                l.push(format!(
                    "dicom-tls {}:{}{}",
                    s.bind,
                    s.tls_port,
                    if s.tls_client_ca.is_some() || s.tls_client_ca_pem.is_some() {
                        " (client certificates required)"
                    } else {
                        ""
                    }
                ));
            }
            l
        } else {
            Vec::new()
        },
        allowlist_entries: if listener {
            file.scp.allowed_callers.len()
        } else {
            0
        },
        destinations,
    });
    info!(path = %path.display(), "audit trail on");
    Ok(log)
}

pub(crate) fn local_backends(
    file: &FileConfig,
) -> Result<(Arc<dyn ObjectStore>, Arc<dyn JobQueue>)> {
    let data = &file.node.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create data dir {}", data.display()))?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(data.join("store"))?);
    let queue: Arc<dyn JobQueue> = Arc::new(SqliteQueue::open(
        data.join("queue.sqlite"),
        file.queue.max_receives,
    )?);
    Ok((store, queue))
}

/// A channel that turns true on SIGINT/SIGTERM.
pub(crate) fn shutdown_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

pub(crate) async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// What a binary built without the `aws` feature says when asked for S3, SQS or ECS.
#[cfg(not(feature = "aws"))]
pub(crate) const NO_AWS: &str = "this segnode was built without the AWS backends (S3, SQS, ECS): \
    build it with `cargo build --release --features aws` (the container image of deploy/ is), \
    or use the embedded defaults (a local store and an SQLite queue under --data-dir)";

#[cfg(not(feature = "aws"))]
async fn aws_backends(_file: &FileConfig) -> Result<(Arc<dyn ObjectStore>, Arc<dyn JobQueue>)> {
    anyhow::bail!(NO_AWS)
}

#[cfg(feature = "aws")]
async fn aws_backends(file: &FileConfig) -> Result<(Arc<dyn ObjectStore>, Arc<dyn JobQueue>)> {
    let a = &file.aws;
    let settings = AwsSettings {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
    };
    let queue_url = a
        .queue_url
        .clone()
        .context("no SQS queue: give --queue-url or [aws] queue_url")?;
    let store: Arc<dyn ObjectStore> = match &a.store {
        // FSx for Lustre linked to the bucket: its data-repository association imports uploads/
        // and incoming/ and exports results/ (deploy/README.md), so keys are the bucket's.
        Some(url) => {
            let path = url
                .strip_prefix("file://")
                .filter(|p| p.starts_with('/'))
                .with_context(|| format!("--store {url:?}: expected file:///ABSOLUTE/PATH"))?;
            Arc::new(LocalStore::open(path)?)
        }
        None => {
            let bucket = a
                .bucket
                .clone()
                .context("no S3 bucket: give --bucket or [aws] bucket (or --store file:///PATH)")?;
            let mut s3 = S3Settings::new(bucket);
            s3.prefix = a.prefix.clone();
            s3.force_path_style = a.force_path_style;
            Arc::new(S3Store::connect(&settings, s3).await)
        }
    };
    let sqs = SqsSettings {
        queue_url,
        dead_letter_queue_url: a.dead_letter_queue_url.clone(),
        max_receives: file.queue.max_receives,
    };
    let queue: Arc<dyn JobQueue> = Arc::new(SqsQueue::connect(&settings, sqs).await);
    Ok((store, queue))
}

/// What runs beside the listener in this process.
#[derive(Default)]
pub(crate) struct Listener {
    /// In-process workers (`serve`), for /metrics and /healthz.
    pool: Option<Arc<WorkerPool>>,
    /// The in-process scaler's metrics (`serve --autoscale`).
    scaler: Option<Arc<scaler::ScalerMetrics>>,
    audit: audit::AuditLog,
}

pub(crate) async fn run_scp(
    file: &FileConfig,
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn JobQueue>,
    listener: Listener,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let Listener {
        pool,
        scaler,
        audit,
    } = listener;
    let mut scp_config = file.scp_config()?;
    scp_config.audit = audit;
    info!(store = %store.location(), queue = %queue.location(), spool = %scp_config.spool_dir.display(), "starting");
    let scp = Scp::bind(scp_config, store, queue.clone()).await?;
    serve_http(file, queue, Some(&scp), pool, scaler)?;
    scp.serve(wait_for(shutdown)).await;
    Ok(())
}

/// Starts /metrics and /healthz (unless --http off) for whatever runs in this process.
fn serve_http(
    file: &FileConfig,
    queue: Arc<dyn JobQueue>,
    scp: Option<&Scp>,
    pool: Option<Arc<WorkerPool>>,
    scaler: Option<Arc<scaler::ScalerMetrics>>,
) -> Result<()> {
    if file.node.http.is_empty() || file.node.http == "off" {
        return Ok(());
    }
    let addr = file
        .node
        .http
        .parse()
        .with_context(|| format!("invalid --http address {}", file.node.http))?;
    let backlog = Arc::new(std::sync::Mutex::new(staging::Backlog::default()));
    let b2 = backlog.clone();
    // The queue is async and remote for SQS: refresh its depth in the background and
    // serve the last reading, so a scrape never waits on AWS.
    tokio::spawn(async move {
        loop {
            if let Ok(b) = queue.backlog().await {
                *b2.lock().unwrap() = b;
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let scp_metrics = scp.map(|s| s.metrics());
    let assembler = scp.map(|s| s.assembler());
    let pool_metrics = pool.clone();
    let endpoints = Arc::new(http::Endpoints {
        metrics: Box::new(move || {
            let mut out = String::new();
            if let Some(m) = &scp_metrics {
                m.render(&mut out);
            }
            if let Some(p) = &pool_metrics {
                p.context().metrics.render(&mut out);
            }
            if let Some(m) = &scaler {
                m.render(&mut out);
            }
            let b = *backlog.lock().unwrap();
            out.push_str(&format!(
                "# HELP segnode_queue_messages Job queue depth.\n# TYPE segnode_queue_messages gauge\nsegnode_queue_messages{{state=\"visible\"}} {}\nsegnode_queue_messages{{state=\"in_flight\"}} {}\n",
                b.visible, b.in_flight
            ));
            out
        }),
        health: Box::new(move || {
            let mut body = "ok\n".to_string();
            if let Some(a) = &assembler {
                body.push_str(&format!("studies_outstanding {}\n", a.outstanding()));
            }
            if let Some(p) = &pool {
                body.push_str(&format!(
                    "workers {}\nworkers_busy {}\n",
                    p.size(),
                    p.busy()
                ));
            }
            Ok(body)
        }),
    });
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, endpoints).await {
            error!("{e:#}");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    info!("shutdown requested");
}
