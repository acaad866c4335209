//! `segnode`: the binary owns configuration, logging, exit codes and the wiring of the rooms.

mod config;
mod http;
mod scaler_cmd;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use config::FileConfig;
use scp::Scp;
use staging::{
    AwsSettings, JobQueue, LocalStore, ObjectStore, S3Settings, S3Store, SqliteQueue, SqsQueue,
    SqsSettings,
};
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
    /// Size the workers by queue backlog: `run` (loop), `tick` (one evaluation), `simulate`.
    Scaler(scaler_cmd::ScalerArgs),
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
    /// DICOM port to listen on.
    #[arg(long, env = "SEGNODE_PORT")]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, env = "SEGNODE_BIND")]
    bind: Option<String>,
    /// Seconds without a new instance after which a study is complete.
    #[arg(long, env = "SEGNODE_QUIET_PERIOD")]
    quiet_period: Option<f64>,
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
    /// Receives before a job is dead-lettered.
    #[arg(long, env = "SEGNODE_MAX_RECEIVES")]
    max_receives: Option<u32>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
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
        set!(f.scp.ae_title, self.ae_title);
        set!(f.scp.port, self.port);
        set!(f.scp.bind, self.bind);
        set!(f.scp.quiet_period_secs, self.quiet_period);
        set!(f.scp.max_associations, self.max_associations);
        set!(f.scp.max_pdu, self.max_pdu);
        set!(f.scp.artim_timeout_secs, self.artim_timeout);
        set!(f.scp.idle_timeout_secs, self.idle_timeout);
        set!(f.scp.max_object_mb, self.max_object_mb);
        set!(f.scp.min_free_disk_mb, self.min_free_disk_mb);
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
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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

async fn run(cli: Cli) -> Result<()> {
    let mut file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            args.node.apply(&mut file);
            let data = &file.node.data_dir;
            std::fs::create_dir_all(data)
                .with_context(|| format!("cannot create data dir {}", data.display()))?;
            let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(data.join("store"))?);
            let queue: Arc<dyn JobQueue> = Arc::new(SqliteQueue::open(
                data.join("queue.sqlite"),
                file.queue.max_receives,
            )?);
            run_scp(&file, store, queue).await
        }
        Command::Scp(args) => {
            args.node.apply(&mut file);
            args.aws.apply(&mut file);
            let (store, queue) = aws_backends(&file).await?;
            run_scp(&file, store, queue).await
        }
        Command::Scaler(args) => scaler_cmd::run(args, &file).await,
    }
}

async fn aws_backends(file: &FileConfig) -> Result<(Arc<dyn ObjectStore>, Arc<dyn JobQueue>)> {
    let a = &file.aws;
    let settings = AwsSettings {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
    };
    let bucket = a
        .bucket
        .clone()
        .context("no S3 bucket: give --bucket or [aws] bucket")?;
    let queue_url = a
        .queue_url
        .clone()
        .context("no SQS queue: give --queue-url or [aws] queue_url")?;
    let mut s3 = S3Settings::new(bucket);
    s3.prefix = a.prefix.clone();
    s3.force_path_style = a.force_path_style;
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::connect(&settings, s3).await);
    let sqs = SqsSettings {
        queue_url,
        dead_letter_queue_url: a.dead_letter_queue_url.clone(),
        max_receives: file.queue.max_receives,
    };
    let queue: Arc<dyn JobQueue> = Arc::new(SqsQueue::connect(&settings, sqs).await);
    Ok((store, queue))
}

async fn run_scp(
    file: &FileConfig,
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn JobQueue>,
) -> Result<()> {
    let scp_config = file.scp_config()?;
    info!(store = %store.location(), queue = %queue.location(), spool = %scp_config.spool_dir.display(), "starting");
    let scp = Scp::bind(scp_config, store, queue.clone()).await?;
    let metrics = scp.metrics();
    let assembler = scp.assembler();
    if !file.node.http.is_empty() && file.node.http != "off" {
        let addr = file
            .node
            .http
            .parse()
            .with_context(|| format!("invalid --http address {}", file.node.http))?;
        let q = queue.clone();
        let backlog = Arc::new(std::sync::Mutex::new(staging::Backlog::default()));
        let b2 = backlog.clone();
        // The queue is async and remote for SQS: refresh its depth in the background and
        // serve the last reading, so a scrape never waits on AWS.
        tokio::spawn(async move {
            loop {
                if let Ok(b) = q.backlog().await {
                    *b2.lock().unwrap() = b;
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        let endpoints = Arc::new(http::Endpoints {
            metrics: Box::new(move || {
                let mut out = String::new();
                metrics.render(&mut out);
                let b = *backlog.lock().unwrap();
                out.push_str(&format!(
                    "# HELP segnode_queue_messages Job queue depth.\n# TYPE segnode_queue_messages gauge\nsegnode_queue_messages{{state=\"visible\"}} {}\nsegnode_queue_messages{{state=\"in_flight\"}} {}\n",
                    b.visible, b.in_flight
                ));
                out
            }),
            health: Box::new(move || {
                Ok(format!(
                    "ok\nstudies_outstanding {}\n",
                    assembler.outstanding()
                ))
            }),
        });
        tokio::spawn(async move {
            if let Err(e) = http::serve(addr, endpoints).await {
                error!("{e:#}");
            }
        });
    }
    scp.serve(shutdown_signal()).await;
    info!("stopped");
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
