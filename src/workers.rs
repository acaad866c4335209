//! Wiring of the segmenter's worker pool from the configuration: model, destinations, timeouts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use segmenter::deliver::{DeliveryOptions, Destination};
use segmenter::worker::{WorkerConfig, WorkerContext, WorkerPool};
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

pub fn load_model(file: &FileConfig) -> Result<Model> {
    let dir = model_dir(file.worker.model.as_ref())?;
    let manifest = Manifest::load(&dir)?;
    segmenter::set_inference_threads(file.worker.inference_threads);
    let started = std::time::Instant::now();
    let model = Model::load(manifest)?;
    info!(
        model = model.manifest().name(),
        version = model.manifest().version(),
        dir = %dir.display(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded and optimised"
    );
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
    c.destinations = w
        .destinations
        .iter()
        .map(|d| d.parse::<Destination>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    c.delivery = DeliveryOptions {
        calling_ae_title: w
            .calling_ae_title
            .clone()
            .unwrap_or_else(|| file.scp.ae_title.clone()),
        attempts: w.delivery_attempts.max(1),
        backoff: secs(w.delivery_backoff_secs, "delivery backoff")?,
        timeout: secs(w.delivery_timeout_secs, "delivery timeout")?,
        ..DeliveryOptions::default()
    };
    Ok(c)
}

/// Loads the model and starts `workers` workers on the queue.
pub fn start_pool(
    file: &FileConfig,
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn JobQueue>,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<WorkerPool>> {
    let model = load_model(file)?;
    let config = worker_config(file)?;
    info!(workers = file.worker.workers, destinations = ?config.destinations.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "starting workers");
    let ctx = WorkerContext::new(model, store, queue, config);
    let pool = Arc::new(WorkerPool::new(ctx, shutdown));
    pool.resize(file.worker.workers);
    Ok(pool)
}
