//! Wiring of the segmenter's worker pool from the configuration: model, destinations, timeouts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use segmenter::deliver::{DeliveryOptions, Target};
use segmenter::stow::{Auth, StowOptions};
use segmenter::worker::{BusyHook, WorkerConfig, WorkerContext, WorkerPool};
use segmenter::{Manifest, Model};
use staging::{JobQueue, ObjectStore};
use tokio::sync::watch;
use tracing::info;

use crate::config::{secs, FileConfig};

const BUNDLED_MODEL: &str = "models/brats-synth-unet2d";

/// The model folder: as configured, else the bundled model found next to the working directory,
/// the executable (…/share/segnode or a cargo target folder) or the source tree it was built from.
pub fn model_dir(configured: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.clone());
    }
    let mut candidates = vec![PathBuf::from(BUNDLED_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("../share/segnode").join(BUNDLED_MODEL));
            candidates.push(dir.join("../..").join(BUNDLED_MODEL));
            candidates.push(dir.join("../../..").join(BUNDLED_MODEL));
        }
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_MODEL));
    candidates
        .iter()
        .find(|c| c.join("model.toml").is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no model given and the bundled one is not in any of {candidates:?}; pass --model DIR"
            )
        })
}

/// Inference threads per worker and how they were chosen: as configured, or (0) the cores this
/// process may use (`available_parallelism`: affinity and cgroup quota, e.g. an ECS task's vCPUs)
/// shared by the workers of this process, at least one each. With `serve --autoscale` the
/// configured `--workers` is the divisor: the threads are chosen once, when the model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadChoice {
    pub threads: usize,
    pub cores: usize,
    pub workers: usize,
    pub configured: bool,
}

impl ThreadChoice {
    pub fn new(configured: usize, workers: usize, cores: usize) -> Self {
        let workers = workers.max(1);
        let cores = cores.max(1);
        ThreadChoice {
            threads: if configured > 0 {
                configured
            } else {
                (cores / workers).max(1)
            },
            cores,
            workers,
            configured: configured > 0,
        }
    }

    pub fn of(file: &FileConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(file.worker.inference_threads, file.worker.workers, cores)
    }
}

/// The log line: "inference threads: N (of M cores, K workers)", or "(configured; ...)".
impl std::fmt::Display for ThreadChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.configured {
            "configured; "
        } else {
            "of "
        };
        write!(
            f,
            "inference threads: {} ({how}{} cores, {} workers)",
            self.threads, self.cores, self.workers
        )
    }
}

pub fn load_model(file: &FileConfig) -> Result<Model> {
    let dir = model_dir(file.worker.model.as_ref())?;
    let manifest = Manifest::load(&dir)?;
    let started = std::time::Instant::now();
    let threads = ThreadChoice::of(file);
    let model = Model::load(manifest)?.with_slice_threads(threads.threads);
    info!(
        model = model.manifest().name(),
        version = model.manifest().version(),
        dir = %dir.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded and optimised"
    );
    info!("{threads}");
    Ok(model)
}

pub fn worker_config(file: &FileConfig) -> Result<WorkerConfig> {
    let w = &file.worker;
    let mut c = WorkerConfig::new(env!("CARGO_PKG_VERSION"));
    c.visibility = secs(w.visibility_timeout_secs, "visibility timeout")?;
    if c.visibility.as_secs_f64() < 1.0 {
        bail!("visibility timeout must be at least 1 second");
    }
    c.retry_delay = secs(w.retry_delay_secs, "retry delay")?;
    c.shutdown_grace = secs(w.shutdown_grace_secs, "shutdown grace")?;
    c.job_deadline = secs(w.job_deadline_secs, "job deadline")?;
    if c.job_deadline.is_zero() {
        bail!("job deadline must be more than 0 seconds");
    }
    c.destinations = w
        .destinations
        .iter()
        .map(|d| d.parse::<Target>().map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    c.delivery = DeliveryOptions {
        calling_ae_title: w
            .calling_ae_title
            .clone()
            .unwrap_or_else(|| file.scp.ae_title.clone()),
        attempts: w.delivery_attempts.max(1),
        backoff: secs(w.delivery_backoff_secs, "delivery backoff")?,
        timeout: secs(w.delivery_timeout_secs, "delivery timeout")?,
        dicomweb: dicomweb_options(w)?,
        dimse_tls: segmenter::deliver::DimseTls {
            ca_file: w.destination_tls_ca.clone(),
            cert_file: w.destination_tls_cert.clone(),
            key_file: w.destination_tls_key.clone(),
        },
        ..DeliveryOptions::default()
    };
    if c.destinations
        .iter()
        .any(|d| matches!(d, Target::Dimse(d) if d.tls))
    {
        // Fail at start, not at the first delivery, on a missing or unreadable file.
        c.delivery
            .dimse_tls
            .client_config()
            .context("dicom-tls:// destinations")?;
    }
    c.seg.volume_report = w.volume_report;
    if w.max_upload_mb == 0 || w.max_upload_files == 0 {
        bail!("max upload size and file count must be at least 1");
    }
    c.upload = segmenter::upload::UploadLimits {
        max_bytes: w.max_upload_mb.saturating_mul(1024 * 1024),
        max_files: w.max_upload_files,
    };
    c.nifti_labels = w.nifti_labels.clone();
    // --store file:// (an FSx mount of the bucket) with events from SQS.
    c.objects_may_lag_events = file.aws.store.is_some();
    Ok(c)
}

/// DICOMweb credentials from the environment: SEGNODE_DICOMWEB_TOKEN (bearer), or
/// SEGNODE_DICOMWEB_USER and SEGNODE_DICOMWEB_PASSWORD (basic); never from the command line (it
/// shows in `ps`) nor the TOML file.
fn dicomweb_options(w: &crate::config::WorkerSection) -> Result<StowOptions> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let auth = match (
        var("SEGNODE_DICOMWEB_TOKEN"),
        var("SEGNODE_DICOMWEB_USER"),
        var("SEGNODE_DICOMWEB_PASSWORD"),
    ) {
        (Some(_), Some(_), _) => {
            bail!("set SEGNODE_DICOMWEB_TOKEN or SEGNODE_DICOMWEB_USER, not both")
        }
        (Some(t), None, _) => Auth::Bearer(t),
        (None, Some(user), password) => Auth::Basic {
            user,
            password: password.unwrap_or_default(),
        },
        (None, None, Some(_)) => {
            bail!("SEGNODE_DICOMWEB_PASSWORD is set without SEGNODE_DICOMWEB_USER")
        }
        (None, None, None) => Auth::None,
    };
    if let Some(ca) = &w.dicomweb_ca_file {
        if !ca.is_file() {
            bail!("DICOMweb CA file {} does not exist", ca.display());
        }
    }
    Ok(StowOptions {
        auth,
        ca_file: w.dicomweb_ca_file.clone(),
    })
}

/// Loads the model and starts `workers` workers on the queue.
pub fn start_pool(
    file: &FileConfig,
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn JobQueue>,
    shutdown: watch::Receiver<bool>,
    audit: audit::AuditLog,
) -> Result<Arc<WorkerPool>> {
    let model = load_model(file)?;
    let mut config = worker_config(file)?;
    segmenter::nifti_case::output_values(model.manifest(), config.nifti_labels.as_deref())
        .map_err(|e| anyhow::anyhow!("nifti_labels: {e}"))?;
    config.audit = audit;
    // Protect the task for a few visibility periods per job; it is renewed at every job start.
    config.busy_hook = EcsProtectionHook::from_env(
        (config.visibility * 4).max(std::time::Duration::from_secs(600)),
    );
    if config.busy_hook.is_some() {
        info!("ECS task scale-in protection is on while a job is held");
    }
    info!(workers = file.worker.workers, destinations = ?config.destinations.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "starting workers");
    let ctx = WorkerContext::new(model, store, queue, config);
    let pool = Arc::new(WorkerPool::new(ctx, shutdown));
    pool.resize(file.worker.workers);
    Ok(pool)
}

/// Runs the scaler's control loop over this process's pool (`segnode serve --autoscale`).
pub fn start_local_scaler(
    pool: Arc<WorkerPool>,
    queue: Arc<dyn JobQueue>,
    policy: scaler::PolicyConfig,
    interval: std::time::Duration,
    shutdown: watch::Receiver<bool>,
) -> Arc<scaler::ScalerMetrics> {
    let target = Arc::new(scaler::LocalPoolTarget::new(Arc::new(ScalablePool(pool))));
    let metrics = Arc::new(scaler::ScalerMetrics::default());
    let controller = scaler::Controller::new(queue, target, policy).with_metrics(metrics.clone());
    info!(?interval, "local autoscaler on");
    tokio::spawn(controller.run(interval, crate::wait_for(shutdown)));
    metrics
}

/// The segmenter's pool as the scaler's local target: `size` counts workers still finishing a job
/// after being asked to stop, as the scaler's contract says; shrinking never stops a busy worker.
pub struct ScalablePool(pub Arc<WorkerPool>);

impl scaler::WorkerPool for ScalablePool {
    fn size(&self) -> usize {
        self.0.alive()
    }
    fn busy(&self) -> usize {
        self.0.busy()
    }
    fn resize(&self, n: usize) {
        info!(workers = n, "scaler: resizing the worker pool");
        self.0.resize(n);
    }
}

/// ECS task scale-in protection while any worker of this task holds a job (the ECS agent's
/// endpoint; only when `ECS_AGENT_URI` is set, i.e. inside an ECS task).
pub struct EcsProtectionHook {
    protection: scaler::TaskProtection,
    expires: std::time::Duration,
    runtime: tokio::runtime::Handle,
}

impl EcsProtectionHook {
    pub fn from_env(expires: std::time::Duration) -> Option<Arc<dyn BusyHook>> {
        let uri = std::env::var("ECS_AGENT_URI").ok()?;
        match scaler::TaskProtection::new(&uri) {
            Ok(protection) => Some(Arc::new(EcsProtectionHook {
                protection,
                expires,
                runtime: tokio::runtime::Handle::current(),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "ECS_AGENT_URI is set but unusable; no scale-in protection");
                None
            }
        }
    }
}

impl BusyHook for EcsProtectionHook {
    fn busy_changed(&self, busy_workers: usize) {
        let protection = self.protection.clone();
        let (on, expires) = if busy_workers > 0 {
            (true, self.expires)
        } else {
            (false, std::time::Duration::ZERO)
        };
        self.runtime.spawn(async move {
            if let Err(e) = protection.set(on, expires).await {
                tracing::warn!(error = %e, protected = on, "cannot set ECS task scale-in protection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn threads_default_to_the_cores_shared_by_the_workers() {
        assert_eq!(ThreadChoice::new(0, 1, 2).threads, 2);
        assert_eq!(ThreadChoice::new(0, 2, 2).threads, 1);
        assert_eq!(ThreadChoice::new(0, 3, 16).threads, 5);
        assert_eq!(ThreadChoice::new(0, 4, 2).threads, 1, "at least one each");
        assert_eq!(
            ThreadChoice::new(3, 4, 2).threads,
            3,
            "a configured count is kept"
        );
        assert_eq!(
            ThreadChoice::new(0, 2, 8).to_string(),
            "inference threads: 4 (of 8 cores, 2 workers)"
        );
        assert_eq!(
            ThreadChoice::new(3, 1, 8).to_string(),
            "inference threads: 3 (configured; 8 cores, 1 workers)"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Loading the bundled model logs the choice this machine gets with no flag.
    #[test]
    fn loading_the_model_logs_the_thread_choice() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let mut file = FileConfig::default();
        file.worker.workers = 2;
        let model = tracing::subscriber::with_default(subscriber, || load_model(&file)).unwrap();
        let cores = std::thread::available_parallelism().unwrap().get();
        let threads = (cores / 2).max(1);
        assert_eq!(model.threads(), threads);
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let want = format!("inference threads: {threads} (of {cores} cores, 2 workers)");
        assert!(text.contains(&want), "no {want:?} in the log:\n{text}");
    }
}
