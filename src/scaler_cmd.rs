//! `segnode scaler run|tick|simulate`: the control loop as a service, one evaluation per
//! scheduled invocation (state in a small JSON file), and the trace simulator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use scaler::controller::unix_now;
use scaler::sim::{self, Builtin, LogNormal, SimConfig, Trace};
#[cfg(feature = "aws")]
use scaler::EcsService;
use scaler::{Controller, Decision, DryRun, PolicyConfig, PolicyState, ScaleTarget, ScalerMetrics};
use serde::{Deserialize, Serialize};
use staging::{AwsSettings, JobQueue, SqliteQueue};
#[cfg(feature = "aws")]
use staging::{SqsQueue, SqsSettings};
use tracing::{error, info};

use crate::config::FileConfig;

#[derive(Args, Debug)]
pub struct ScalerArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Evaluate every --interval seconds until SIGTERM.
    Run(RunArgs),
    /// One evaluation (for a scheduled function); the policy's memory is kept in --state.
    Tick(TickArgs),
    /// Replay an arrival trace against the policy and a fixed pool of the same cost.
    Simulate(SimulateArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Seconds between evaluations.
    #[arg(long, default_value_t = 30.0, env = "SEGNODE_SCALER_INTERVAL")]
    interval: f64,
    /// Address of /metrics and /healthz (off by default).
    #[arg(long, env = "SEGNODE_SCALER_HTTP")]
    http: Option<String>,
}

#[derive(Args, Debug)]
struct TickArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// JSON file holding what the policy remembers between ticks (created if missing).
    #[arg(long, env = "SEGNODE_SCALER_STATE")]
    state: PathBuf,
}

/// Where the backlog is read: SQS, or the embedded SQLite queue of `segnode serve`.
#[derive(Args, Debug)]
struct SourceArgs {
    /// SQS job queue URL.
    #[arg(long, env = "SEGNODE_QUEUE_URL", conflicts_with = "data_dir")]
    queue_url: Option<String>,
    /// Override the AWS endpoint (e.g. a moto server), for SQS and ECS.
    #[arg(long, env = "SEGNODE_AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    #[arg(long, env = "SEGNODE_AWS_REGION")]
    region: Option<String>,
    /// Data dir of a `segnode serve` whose SQLite queue (queue.sqlite) to read.
    #[arg(long, env = "SEGNODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// What gets resized: an ECS service, or nothing (--dry-run logs the decisions).
#[derive(Args, Debug)]
struct TargetArgs {
    #[arg(long, env = "SEGNODE_ECS_CLUSTER", requires = "ecs_service")]
    ecs_cluster: Option<String>,
    #[arg(long, env = "SEGNODE_ECS_SERVICE", requires = "ecs_cluster")]
    ecs_service: Option<String>,
    /// Change nothing; log what would be done.
    #[arg(long, conflicts_with_all = ["ecs_cluster", "ecs_service"])]
    dry_run: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub(crate) struct PolicyArgs {
    /// Backlog (visible + in-flight messages) one task carries [default 2].
    #[arg(long, env = "SEGNODE_SCALER_TARGET_PER_TASK")]
    target_per_task: Option<f64>,
    /// Floor; 0 lets the pool go to zero after --idle-secs [default 0].
    #[arg(long, env = "SEGNODE_SCALER_MIN_TASKS")]
    min_tasks: Option<u32>,
    /// Ceiling [default 10].
    #[arg(long, env = "SEGNODE_SCALER_MAX_TASKS")]
    max_tasks: Option<u32>,
    /// Most tasks added by one decision [default: no limit].
    #[arg(long, env = "SEGNODE_SCALER_MAX_STEP_OUT")]
    max_step_out: Option<u32>,
    /// Scale in only to the highest recommendation of this many seconds [default 600].
    #[arg(long, env = "SEGNODE_SCALER_STABILISATION_SECS")]
    stabilisation_secs: Option<f64>,
    /// No scale-in within this many seconds of the previous change [default 60].
    #[arg(long, env = "SEGNODE_SCALER_COOLDOWN_SECS")]
    cooldown_secs: Option<f64>,
    /// Seconds of empty backlog before the last task goes (with --min-tasks 0) [default 600].
    #[arg(long, env = "SEGNODE_SCALER_IDLE_SECS")]
    idle_secs: Option<f64>,
    /// From zero, scale out once the backlog reaches this many messages [default 1].
    #[arg(long, env = "SEGNODE_SCALER_ACTIVATION")]
    activation: Option<u64>,
}

impl PolicyArgs {
    pub(crate) fn config(&self) -> Result<PolicyConfig> {
        let mut c = PolicyConfig::default();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            target_per_task,
            min_tasks,
            max_tasks,
            stabilisation_secs,
            cooldown_secs,
            idle_secs,
            activation
        );
        if self.max_step_out.is_some() {
            c.max_step_out = self.max_step_out;
        }
        c.validate().context("invalid scaling policy")?;
        Ok(c)
    }
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// Arrival trace, CSV: arrival_seconds[,service_seconds] per line.
    #[arg(long, conflicts_with = "builtin")]
    trace: Option<PathBuf>,
    /// A generated trace: steady, morning-peak, outage-flood (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    builtin: Vec<String>,
    /// Seed for generated traces and service times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Median seconds to segment a study.
    #[arg(long, default_value_t = 12.0)]
    median_secs: f64,
    /// 90th-percentile seconds to segment a study (lognormal between the two).
    #[arg(long, default_value_t = 25.0)]
    p90_secs: f64,
    /// Seconds from launching a task to its first job.
    #[arg(long, default_value_t = 60.0)]
    startup_secs: f64,
    /// Seconds between policy decisions.
    #[arg(long, default_value_t = 15.0)]
    interval: f64,
    /// Price of one task-hour, for the cost per study (comma-separated or repeated).
    #[arg(long = "price-per-task-hour", value_delimiter = ',')]
    prices: Vec<f64>,
    /// Write a PNG of backlog, tasks and waits here (one trace), or PATH-<trace>.png (several).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub async fn run(args: ScalerArgs, file: &FileConfig) -> Result<()> {
    match args.mode {
        Mode::Run(a) => run_loop(a, file).await,
        Mode::Tick(a) => tick(a, file).await,
        Mode::Simulate(a) => simulate(a),
    }
}

impl SourceArgs {
    fn aws(&self, file: &FileConfig) -> AwsSettings {
        AwsSettings {
            region: self.region.clone().or_else(|| file.aws.region.clone()),
            endpoint_url: self
                .endpoint_url
                .clone()
                .or_else(|| file.aws.endpoint_url.clone()),
        }
    }

    async fn queue(&self, file: &FileConfig) -> Result<Arc<dyn JobQueue>> {
        if let Some(dir) = &self.data_dir {
            let path = dir.join("queue.sqlite");
            if !path.exists() {
                bail!("no SQLite queue at {}", path.display());
            }
            return Ok(Arc::new(SqliteQueue::open(path, file.queue.max_receives)?));
        }
        let queue_url = self
            .queue_url
            .clone()
            .or_else(|| file.aws.queue_url.clone())
            .context("no queue: give --queue-url (SQS) or --data-dir (SQLite queue)")?;
        #[cfg(not(feature = "aws"))]
        {
            let _ = queue_url;
            bail!(crate::NO_AWS)
        }
        #[cfg(feature = "aws")]
        {
            let sqs = SqsSettings {
                queue_url,
                dead_letter_queue_url: None,
                max_receives: file.queue.max_receives,
            };
            Ok(Arc::new(SqsQueue::connect(&self.aws(file), sqs).await))
        }
    }
}

impl TargetArgs {
    async fn target(&self, aws: &AwsSettings, dry_run_count: u32) -> Result<Arc<dyn ScaleTarget>> {
        match (&self.ecs_cluster, &self.ecs_service, self.dry_run) {
            #[cfg(feature = "aws")]
            (Some(c), Some(s), false) => Ok(Arc::new(EcsService::connect(aws, c, s).await?)),
            #[cfg(not(feature = "aws"))]
            (Some(_), Some(_), false) => {
                let _ = aws;
                bail!(crate::NO_AWS)
            }
            (None, None, true) => Ok(Arc::new(DryRun::new(dry_run_count))),
            _ => bail!("no scale target: give --ecs-cluster and --ecs-service, or --dry-run"),
        }
    }
}

async fn run_loop(a: RunArgs, file: &FileConfig) -> Result<()> {
    let config = a.policy.config()?;
    if !(a.interval.is_finite() && a.interval >= 0.1) {
        bail!("--interval must be at least 0.1 seconds");
    }
    let queue = a.source.queue(file).await?;
    let target = a.target.target(&a.source.aws(file), 0).await?;
    info!(queue = %queue.location(), target = %target.describe(), ?config, "scaler starting");
    let metrics = Arc::new(ScalerMetrics::default());
    if let Some(addr) = a.http.as_deref().filter(|h| !h.is_empty() && *h != "off") {
        let addr = addr
            .parse()
            .with_context(|| format!("invalid --http address {addr}"))?;
        let m = metrics.clone();
        let endpoints = Arc::new(crate::http::Endpoints {
            metrics: Box::new(move || {
                let mut out = String::new();
                m.render(&mut out);
                out
            }),
            health: Box::new(|| Ok("ok\n".to_string())),
        });
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(addr, endpoints).await {
                error!("{e:#}");
            }
        });
    }
    Controller::new(queue, target, config)
        .with_metrics(metrics)
        .run(
            Duration::from_secs_f64(a.interval),
            crate::shutdown_signal(),
        )
        .await;
    info!("scaler stopped");
    Ok(())
}

/// What `tick` keeps between invocations.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct TickState {
    version: u32,
    policy: PolicyState,
    /// The count a dry run pretends to have set.
    dry_run_tasks: u32,
    last_decision: Option<Decision>,
}

const TICK_STATE_VERSION: u32 = 1;

fn load_state(path: &Path) -> Result<TickState> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s: TickState = serde_json::from_str(&text)
                .with_context(|| format!("invalid scaler state file {}", path.display()))?;
            if s.version != TICK_STATE_VERSION {
                bail!(
                    "scaler state file {} has version {}, expected {TICK_STATE_VERSION}",
                    path.display(),
                    s.version
                );
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TickState {
            version: TICK_STATE_VERSION,
            ..TickState::default()
        }),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Write via a temporary file and rename, so a crash never leaves half a state file.
fn save_state(path: &Path, state: &TickState) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(state)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

async fn tick(a: TickArgs, file: &FileConfig) -> Result<()> {
    let config = a.policy.config()?;
    let mut state = load_state(&a.state)?;
    let queue = a.source.queue(file).await?;
    let target = a
        .target
        .target(&a.source.aws(file), state.dry_run_tasks)
        .await?;
    let mut controller = Controller::new(queue, target.clone(), config)
        .with_state(std::mem::take(&mut state.policy));
    let decision = controller.tick(unix_now()).await?;
    state.policy = controller.state().clone();
    state.dry_run_tasks = decision.desired;
    state.last_decision = Some(decision);
    save_state(&a.state, &state)?;
    println!("{}", serde_json::to_string(&decision)?);
    Ok(())
}

fn simulate(a: SimulateArgs) -> Result<()> {
    let policy = a.policy.config()?;
    let service = LogNormal::from_median_p90(a.median_secs, a.p90_secs)
        .context("service time: need 0 < --median-secs <= --p90-secs")?;
    if !(a.startup_secs >= 0.0 && a.interval > 0.0) {
        bail!("--startup-secs must be >= 0 and --interval > 0");
    }
    let config = SimConfig {
        service,
        startup_secs: a.startup_secs,
        interval_secs: a.interval,
        seed: a.seed,
        ..SimConfig::default()
    };
    let traces: Vec<Trace> = match (&a.trace, a.builtin.is_empty()) {
        (Some(path), true) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read trace {}", path.display()))?;
            vec![Trace::parse_csv(&path.display().to_string(), &text)?]
        }
        (None, false) => a
            .builtin
            .iter()
            .map(|b| Ok(Trace::builtin(b.parse::<Builtin>()?, a.seed)))
            .collect::<Result<_>>()?,
        _ => bail!("give --trace FILE or --builtin steady|morning-peak|outage-flood"),
    };
    println!(
        "policy: {policy:?}\nservice: lognormal median {} s, p90 {} s (mean {:.1} s); start-up {} s; decisions every {} s; seed {}",
        a.median_secs,
        a.p90_secs,
        service.mean(),
        a.startup_secs,
        a.interval,
        a.seed
    );
    for trace in &traces {
        let runs = sim::compare(trace, &config, &policy);
        let rows: Vec<_> = runs.iter().map(sim::summarise).collect();
        println!(
            "\ntrace {}: {} studies over {:.1} h",
            trace.name,
            trace.arrivals.len(),
            trace.duration / 3600.0
        );
        print!("{}", sim::table(&rows, &a.prices));
        if let Some(plot) = &a.plot {
            let path = if traces.len() == 1 {
                plot.clone()
            } else {
                let stem = plot.with_extension("");
                PathBuf::from(format!("{}-{}.png", stem.display(), trace.name))
            };
            let refs: Vec<_> = runs.iter().collect();
            sim::plot(&path, &format!("segnode scaler: {}", trace.name), &refs)?;
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}
