//! The worker loop: receive a job, keep it hidden while working (heartbeat), segment, store the SEG
//! under `results/`, deliver it to every destination, and only then delete the job. A failure
//! releases the job for another attempt; a study that can never succeed, or a job out of attempts,
//! goes to the dead-letter queue with the reason.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staging::{Job, JobQueue, ObjectKey, ObjectStore, Received, Uid};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn, Instrument};

use crate::deliver::{deliver, DeliveryError, DeliveryOptions, Target};
use crate::error::SegmentError;
use crate::metrics::WorkerMetrics;
use crate::model::Model;
use crate::pipeline::{segment_study, Outcome, SegSettings};
use crate::study::parse_instance;
use crate::upload::{self, Message, S3Object, UploadLimits};

/// Called when a worker takes or finishes a job (e.g. ECS task scale-in protection on/off).
pub trait BusyHook: Send + Sync {
    fn busy_changed(&self, busy_workers: usize);
}

#[derive(Clone)]
pub struct WorkerConfig {
    /// How long a received job stays hidden; renewed every `visibility / 3` while working.
    pub visibility: Duration,
    /// Long-poll wait of one receive.
    pub poll_wait: Duration,
    /// Delay before a failed job is visible again.
    pub retry_delay: Duration,
    /// How long shutdown waits for a job in progress before releasing it.
    pub shutdown_grace: Duration,
    /// The longest one attempt at a job may take (fetch, segmentation, delivery): past it the
    /// job is abandoned (no more heartbeats) and released for another attempt, or dead-lettered
    /// on its last, with the reason. A hung store read or destination no longer holds the job
    /// (and the worker) forever. Work already running on a blocking thread is not interrupted:
    /// its result is dropped.
    pub job_deadline: Duration,
    /// Destinations for every job, besides those a job names itself.
    pub destinations: Vec<Target>,
    pub delivery: DeliveryOptions,
    pub seg: SegSettings,
    /// Bounds on an upload (S3 event path): bytes and files.
    pub upload: UploadLimits,
    /// Voxel values written into NIfTI label maps, one per manifest segment (e.g. BraTS
    /// 2018-2021's `[1, 2, 4]`); None: the manifest's own label values.
    pub nifti_labels: Option<Vec<u8>>,
    /// The store is a file system that imports the bucket asynchronously (`--store file://` on an
    /// FSx mount): an upload whose key is not there yet is retried, not dead-lettered.
    pub objects_may_lag_events: bool,
    pub busy_hook: Option<Arc<dyn BusyHook>>,
    /// Job done, dead-lettered, and every delivery attempt go to the audit trail.
    pub audit: audit::AuditLog,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("visibility", &self.visibility)
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl WorkerConfig {
    pub fn new(version: &str) -> Self {
        WorkerConfig {
            visibility: Duration::from_secs(120),
            poll_wait: Duration::from_secs(5),
            retry_delay: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(60),
            job_deadline: DEFAULT_JOB_DEADLINE,
            destinations: Vec::new(),
            delivery: DeliveryOptions::default(),
            seg: SegSettings::segnode(version),
            upload: UploadLimits::default(),
            nifti_labels: None,
            objects_may_lag_events: false,
            busy_hook: None,
            audit: audit::AuditLog::disabled(),
        }
    }
}

/// 30 minutes: far above a study's usual minutes (inference of a big study on a few cores),
/// far below "forever".
pub const DEFAULT_JOB_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Everything the workers share.
#[derive(Clone)]
pub struct WorkerContext {
    pub model: Model,
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn JobQueue>,
    pub config: WorkerConfig,
    pub metrics: Arc<WorkerMetrics>,
    busy: Arc<AtomicUsize>,
}

impl WorkerContext {
    pub fn new(
        model: Model,
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn JobQueue>,
        config: WorkerConfig,
    ) -> Self {
        WorkerContext {
            model,
            store,
            queue,
            config,
            metrics: Arc::new(WorkerMetrics::default()),
            busy: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set_busy(&self, delta: isize) {
        let now = if delta > 0 {
            self.busy.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.busy.fetch_sub(1, Ordering::SeqCst) - 1
        };
        self.metrics
            .busy_workers
            .store(now as u64, Ordering::Relaxed);
        if let Some(h) = &self.config.busy_hook {
            h.busy_changed(now);
        }
    }

    pub fn busy_workers(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}

/// What became of one job attempt.
#[derive(Debug)]
pub enum Handled {
    Done {
        seg_sop_instance_uid: String,
        delivered_to: Vec<String>,
    },
    Released(String),
    DeadLettered(String),
    /// Nothing to do (an S3 test event, an event about no created object); deleted.
    Ignored(String),
}

async fn fetch_and_segment(
    ctx: &WorkerContext,
    job: &Job,
) -> Result<(Outcome, Duration), SegmentError> {
    let started = Instant::now();
    let mut bytes = Vec::with_capacity(job.objects.len());
    for o in &job.objects {
        let b = ctx
            .store
            .get(&o.key)
            .await
            .map_err(|source| SegmentError::Store {
                key: o.key.as_str().to_string(),
                source,
            })?;
        bytes.push((o.key.as_str().to_string(), b));
    }
    let fetch = started.elapsed();
    let model = ctx.model.clone();
    let seed = job.job_id.clone();
    let settings = ctx.config.seg.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (instances, unreadable) = parse_readable(&bytes)?;
        drop(bytes);
        let parse = started.elapsed();
        let mut out = segment_study(&model, instances, &seed, &settings).map_err(|e| {
            if unreadable.is_empty() {
                e
            } else {
                with_unreadable(e, &unreadable)
            }
        })?;
        out.timings.decode += parse;
        Ok::<_, SegmentError>(out)
    })
    .await
    .map_err(|source| SegmentError::Task {
        what: "segmentation",
        source,
    })??;
    Ok((outcome, fetch))
}

/// Parses the fetched instances; an unreadable one is left out (and logged) rather than failing
/// the study: if its series stays usable (the volume builder's gap rule decides: a missing
/// edge slice is fine, a missing middle slice is not) the study is segmented without it.
/// Fails only when nothing is readable.
pub fn parse_readable<B: AsRef<[u8]>>(
    fetched: &[(String, B)],
) -> Result<(Vec<dicom_object::DefaultDicomObject>, Vec<String>), SegmentError> {
    let mut instances = Vec::with_capacity(fetched.len());
    let mut unreadable = Vec::new();
    let mut first_error = None;
    for (name, b) in fetched {
        match parse_instance(b.as_ref(), name) {
            Ok(obj) => instances.push(obj),
            Err(e) => {
                warn!(key = %staging::Escaped(name), error = %e, "unreadable instance left out of the study");
                unreadable.push(name.clone());
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if instances.is_empty() => Err(e),
        _ => Ok((instances, unreadable)),
    }
}

/// Says which instances were left out when the study then fails (a series with a gap).
fn with_unreadable(e: SegmentError, unreadable: &[String]) -> SegmentError {
    let note = format!(
        " ({} unreadable instance(s) left out: {})",
        unreadable.len(),
        staging::escape(&unreadable.join(", "))
    );
    match e {
        SegmentError::Geometry {
            series_uid,
            message,
        } => SegmentError::Geometry {
            series_uid,
            message: message + &note,
        },
        SegmentError::MissingSeries(m) => SegmentError::MissingSeries(m + &note),
        other => other,
    }
}

/// Processes one received message to the end (done, released or dead-lettered). The message is
/// segnode's own job, or an S3 event notification about an upload (expanded into a job here).
pub async fn handle(ctx: &WorkerContext, msg: Received) -> Handled {
    match upload::parse_message(&msg.body) {
        Ok(Message::Job(job)) => {
            let span = tracing::info_span!("job", job_id = %job.job_id, study = %job.study_uid, attempt = msg.receive_count);
            process(ctx, &msg, Work::Job(job)).instrument(span).await
        }
        Ok(Message::S3Event(objects)) => {
            let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
            let span = tracing::info_span!("upload", keys = ?keys, attempt = msg.receive_count);
            process(ctx, &msg, Work::Uploads(objects))
                .instrument(span)
                .await
        }
        Ok(Message::S3TestEvent { bucket }) => {
            let what = format!("S3 test event for bucket {bucket:?}");
            info!("{what}: deleted");
            if let Err(e) = ctx.queue.delete(&msg.receipt).await {
                warn!(error = %e, "cannot delete the S3 test event");
            }
            Handled::Ignored(what)
        }
        Err(reason) => dead_letter(ctx, &msg, None, reason.to_string()).await,
    }
}

/// What a message asks a worker to do.
enum Work {
    Job(Job),
    /// Objects of an S3 event notification: each upload becomes one job.
    Uploads(Vec<S3Object>),
}

/// Does `work` while keeping the message hidden, then deletes, releases or dead-letters it.
async fn process(ctx: &WorkerContext, msg: &Received, work: Work) -> Handled {
    if let Work::Job(job) = &work {
        info!(objects = job.object_count(), "job received");
    }

    // Heartbeat: keep the message hidden while we work.
    let heartbeat = {
        let queue = ctx.queue.clone();
        let receipt = msg.receipt.clone();
        let visibility = ctx.config.visibility;
        tokio::spawn(async move {
            let every = (visibility / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.extend(&receipt, visibility).await {
                    warn!(error = %e, "cannot extend the job's visibility");
                }
            }
        })
    };
    let attempt = async {
        match &work {
            Work::Job(job) => match load_objects(ctx, job).await {
                Ok(job) => run_job(ctx, &job).await.map(Some),
                Err(e) => Err(e),
            },
            Work::Uploads(objects) => run_uploads(ctx, objects).await,
        }
    };
    let deadline = ctx.config.job_deadline;
    let result = match tokio::time::timeout(deadline, attempt).await {
        Ok(r) => r,
        Err(_) => {
            ctx.metrics
                .jobs_past_deadline
                .fetch_add(1, Ordering::Relaxed);
            Err(SegmentError::Deadline {
                seconds: deadline.as_secs_f64(),
            })
        }
    };
    heartbeat.abort();
    match result {
        Ok(None) => match ctx.queue.delete(&msg.receipt).await {
            Ok(()) => {
                info!("no upload to process in this event; deleted");
                Handled::Ignored("no ObjectCreated record".into())
            }
            Err(e) => Handled::Released(e.to_string()),
        },
        Ok(Some((sop, delivered_to))) => match ctx.queue.delete(&msg.receipt).await {
            Ok(()) => {
                ctx.metrics.jobs_done.fetch_add(1, Ordering::Relaxed);
                info!(seg = %sop, destinations = ?delivered_to, "job done");
                Handled::Done {
                    seg_sop_instance_uid: sop,
                    delivered_to,
                }
            }
            Err(e) => {
                // Delivered, but the queue will show the job again: the redo yields the same SEG UID.
                ctx.metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "job done but could not be deleted; it will be redone (same SEG UID)");
                Handled::Released(e.to_string())
            }
        },
        Err(e) => {
            let reason = e.to_string();
            if e.is_permanent() {
                error!(error = %reason, "job cannot succeed; dead-lettering");
                dead_letter(ctx, msg, Some(&work), reason).await
            } else if msg.receive_count >= ctx.queue.max_receives() {
                error!(error = %reason, "job failed on its last attempt; dead-lettering");
                dead_letter(
                    ctx,
                    msg,
                    Some(&work),
                    format!("failed {} times; last error: {reason}", msg.receive_count),
                )
                .await
            } else {
                warn!(error = %reason, retry_in = ?ctx.config.retry_delay, "job failed; released for another attempt");
                ctx.metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ctx
                    .queue
                    .release(&msg.receipt, ctx.config.retry_delay)
                    .await
                {
                    warn!(error = %e, "cannot release the job; it reappears when its visibility ends");
                }
                Handled::Released(reason)
            }
        }
    }
}

/// Expands every upload the event names into a job and runs it; None when the event names no
/// created object (nothing to do).
async fn run_uploads(
    ctx: &WorkerContext,
    objects: &[S3Object],
) -> Result<Option<(String, Vec<String>)>, SegmentError> {
    let mut last = None;
    for o in objects {
        if !o.is_created() {
            info!(event = %o.event_name, key = %o.key, "not an ObjectCreated event; ignored");
            continue;
        }
        let key = ctx
            .store
            .key_of_bucket_object(&o.bucket, &o.key)
            .ok_or_else(|| SegmentError::Upload {
                key: format!("s3://{}/{}", o.bucket, o.key),
                message: format!(
                    "is not an object of this worker's store ({})",
                    ctx.store.location()
                ),
            })?;
        if ctx.config.objects_may_lag_events
            && !ctx
                .store
                .exists(&key)
                .await
                .map_err(|source| SegmentError::Store {
                    key: key.as_str().to_string(),
                    source,
                })?
        {
            // A file store fed by an FSx data-repository association imports asynchronously:
            // the event can come first. Retried (--retry-delay), dead-lettered after
            // --max-receives attempts.
            return Err(SegmentError::NotImported {
                key: key.as_str().to_string(),
            });
        }
        let fetched = upload::fetch(ctx.store.as_ref(), &key, o.size, &ctx.config.upload).await?;
        if crate::nifti_upload::is_nifti_upload(&fetched) {
            last = Some(crate::nifti_upload::run(ctx, &key, fetched).await?);
            continue;
        }
        let job = upload::stage(ctx.store.as_ref(), &key, fetched.files).await?;
        let span = tracing::info_span!("job", job_id = %job.job_id, study = %job.study_uid);
        info!(parent: &span, upload = %key, objects = job.objects.len(), "upload expanded into a job");
        last = Some(run_job(ctx, &job).instrument(span).await?);
    }
    Ok(last)
}

/// The job with its object list: a version-2 job's manifest is read from the store (a store
/// failure is retried; a missing or altered manifest is the job's own, permanent failure).
async fn load_objects(ctx: &WorkerContext, job: &Job) -> Result<Job, SegmentError> {
    let mut job = job.clone();
    if job.manifest.is_some() {
        job.load_objects(ctx.store.as_ref()).await.map_err(|e| {
            if e.is_transient() {
                SegmentError::JobManifest(e)
            } else {
                SegmentError::BadJob(e.to_string())
            }
        })?;
        info!(
            objects = job.objects.len(),
            "object list read from the job's manifest"
        );
    }
    Ok(job)
}

async fn dead_letter(
    ctx: &WorkerContext,
    msg: &Received,
    work: Option<&Work>,
    reason: String,
) -> Handled {
    ctx.metrics
        .jobs_dead_lettered
        .fetch_add(1, Ordering::Relaxed);
    if let Err(e) = ctx.queue.dead_letter(msg, &reason).await {
        error!(error = %e, "cannot dead-letter the job");
    }
    let (study_uid, job_id) = match work {
        Some(Work::Job(job)) => (Some(job.study_uid.to_string()), job.job_id.clone()),
        // An upload event or an unreadable message: named by its queue message.
        _ => (None, format!("message {}", msg.message_id)),
    };
    ctx.config.audit.record(audit::Event::JobDeadLettered {
        study_uid,
        job_id,
        reason: reason.clone(),
    });
    Handled::DeadLettered(reason)
}

async fn run_job(ctx: &WorkerContext, job: &Job) -> Result<(String, Vec<String>), SegmentError> {
    let job_started = Instant::now();
    let (outcome, fetch) = fetch_and_segment(ctx, job).await?;
    let m = &ctx.metrics;
    m.record("fetch", fetch);
    for (stage, d) in outcome.timings.stages() {
        m.record(stage, d);
    }
    if let Some(ml) = outcome.brain_ml {
        m.last_brain_ul
            .store((ml * 1e3).round().max(1.0) as u64, Ordering::Relaxed);
    }
    let sop = outcome.seg_sop_instance_uid.clone();
    let key = ObjectKey::result(
        &job.study_uid,
        &Uid::new(&sop).map_err(|source| SegmentError::SegUid {
            uid: sop.clone(),
            source,
        })?,
    );
    let volumes: Vec<String> = outcome
        .segments
        .iter()
        .map(|s| format!("{} {:.2} mL", s.name, s.ml))
        .collect();
    info!(
        fetch_ms = fetch.as_millis() as u64,
        decode_ms = outcome.timings.decode.as_millis() as u64,
        brain_extraction_ms = outcome.timings.brain_extraction.as_millis() as u64,
        preprocess_ms = outcome.timings.preprocess.as_millis() as u64,
        inference_ms = outcome.timings.inference.as_millis() as u64,
        postprocess_ms = outcome.timings.postprocess.as_millis() as u64,
        encode_ms = outcome.timings.encode.as_millis() as u64,
        seg = %sop,
        frames = outcome.seg_frames,
        volumes = ?volumes,
        brain_ml = outcome.brain_ml.map(|v| format!("{v:.0}")),
        "segmented"
    );
    ctx.store
        .put(&key, outcome.seg.clone().into())
        .await
        .map_err(|source| SegmentError::Store {
            key: key.as_str().to_string(),
            source,
        })?;
    // The volumes beside the SEG (issue 18), after it: the same document as for NIfTI input.
    let json_key = ObjectKey::new(format!("results/{}/volumes.json", job.study_uid))
        .map_err(|e| SegmentError::BadJob(e.to_string()))?;
    let json = crate::volumes_json::for_dicom(ctx.model.manifest(), &outcome, &[("fetch", fetch)]);
    ctx.store
        .put(&json_key, json.into())
        .await
        .map_err(|source| SegmentError::Store {
            key: json_key.as_str().to_string(),
            source,
        })?;
    let started = Instant::now();
    let mut destinations = ctx.config.destinations.clone();
    for d in &job.results.destinations {
        let d: Target = d.parse()?;
        if !destinations.contains(&d) {
            destinations.push(d);
        }
    }
    let mut delivered = Vec::new();
    // The SEG, then the volume report that references it, in one association / request.
    let mut objects: Vec<&[u8]> = vec![&outcome.seg];
    if let Some(sr) = &outcome.sr {
        objects.push(sr);
    }
    let audit_delivery = |destination: &Target, status: String| {
        ctx.config.audit.record(audit::Event::ResultDelivered {
            study_uid: job.study_uid.to_string(),
            job_id: job.job_id.clone(),
            destination: destination.to_string(),
            result_uid: Some(sop.clone()),
            status,
        })
    };
    for d in &destinations {
        let statuses = match deliver(&objects, d, &ctx.config.delivery).await {
            // A destination that takes SEGs but not SRs still gets the SEG: the report is extra.
            Err(DeliveryError::Scu(dimse::ScuError::NotAccepted(_, class)))
                if objects.len() > 1 && class == dicom_seg::COMPREHENSIVE_3D_SR_STORAGE =>
            {
                warn!(destination = %d, "the destination does not accept Comprehensive 3D SR: SEG sent without the volume report");
                deliver(&objects[..1], d, &ctx.config.delivery).await
            }
            other => other,
        }
        .map_err(|e| {
            audit_delivery(d, format!("failed: {e}"));
            SegmentError::Delivery {
                destination: d.to_string(),
                message: e.to_string(),
            }
        })?;
        let statuses: Vec<String> = statuses.iter().map(|s| format!("0x{s:04X}")).collect();
        info!(destination = %d, statuses = ?statuses, objects = objects.len(), "SEG delivered");
        audit_delivery(d, format!("success ({})", statuses.join(", ")));
        delivered.push(d.to_string());
    }
    m.record("deliver", started.elapsed());
    ctx.config.audit.record(audit::Event::JobDone {
        study_uid: job.study_uid.to_string(),
        job_id: job.job_id.clone(),
        result_uid: Some(sop.clone()),
        seconds: job_started.elapsed().as_secs_f64(),
    });
    Ok((sop, delivered))
}

/// One worker: receive and handle jobs until `stop` (this worker) or `shutdown` (all) says so.
async fn worker_loop(
    ctx: WorkerContext,
    id: usize,
    stop: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(worker = id, "worker started");
    ctx.metrics.workers.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::SeqCst) && !*shutdown.borrow() {
        let received = tokio::select! {
            r = ctx.queue.receive(1, ctx.config.visibility, ctx.config.poll_wait) => r,
            _ = shutdown.changed() => break,
        };
        let msgs = match received {
            Ok(m) => m,
            Err(e) => {
                warn!(worker = id, error = %e, "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for msg in msgs {
            ctx.set_busy(1);
            let receipt = msg.receipt.clone();
            let work = handle(&ctx, msg);
            tokio::pin!(work);
            let finished = tokio::select! {
                _ = &mut work => true,
                _ = wait_for_shutdown(shutdown.clone()) => false,
            };
            if !finished {
                // Shutting down: give the job a grace period, then hand it back.
                match tokio::time::timeout(ctx.config.shutdown_grace, &mut work).await {
                    Ok(_) => {}
                    Err(_) => {
                        warn!(
                            worker = id,
                            "shutdown: job not finished in the grace period; released"
                        );
                        let _ = ctx.queue.release(&receipt, Duration::ZERO).await;
                    }
                }
            }
            ctx.set_busy(-1);
        }
    }
    ctx.metrics.workers.fetch_sub(1, Ordering::Relaxed);
    info!(worker = id, "worker stopped");
}

async fn wait_for_shutdown(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

struct Slot {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// N workers in this process sharing one model. Resizable: shrinking asks the newest workers to
/// stop after their current job, so a busy worker is never killed.
pub struct WorkerPool {
    ctx: WorkerContext,
    shutdown: watch::Receiver<bool>,
    slots: Mutex<Vec<Slot>>,
    next_id: AtomicUsize,
}

impl WorkerPool {
    pub fn new(ctx: WorkerContext, shutdown: watch::Receiver<bool>) -> Self {
        WorkerPool {
            ctx,
            shutdown,
            slots: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(1),
        }
    }

    pub fn context(&self) -> &WorkerContext {
        &self.ctx
    }

    /// Workers running (not asked to stop).
    pub fn size(&self) -> usize {
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|s| !s.handle.is_finished());
        slots
            .iter()
            .filter(|s| !s.stop.load(Ordering::SeqCst))
            .count()
    }

    pub fn busy(&self) -> usize {
        self.ctx.busy_workers()
    }

    /// Worker tasks still alive, those asked to stop but finishing a job included.
    pub fn alive(&self) -> usize {
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|s| !s.handle.is_finished());
        slots.len()
    }

    /// Grows or shrinks to `n` workers.
    pub fn resize(&self, n: usize) {
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|s| !s.handle.is_finished());
        let running: Vec<usize> = (0..slots.len())
            .filter(|&i| !slots[i].stop.load(Ordering::SeqCst))
            .collect();
        if running.len() < n {
            for _ in running.len()..n {
                let stop = Arc::new(AtomicBool::new(false));
                let id = self.next_id.fetch_add(1, Ordering::SeqCst);
                let handle = tokio::spawn(worker_loop(
                    self.ctx.clone(),
                    id,
                    stop.clone(),
                    self.shutdown.clone(),
                ));
                slots.push(Slot { stop, handle });
            }
        } else {
            for &i in running.iter().rev().take(running.len() - n) {
                slots[i].stop.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Waits for every worker to end (after shutdown was signalled).
    pub async fn join(&self) {
        let handles: Vec<JoinHandle<()>> = {
            let mut slots = self.slots.lock().unwrap();
            slots.drain(..).map(|s| s.handle).collect()
        };
        for h in handles {
            let _ = h.await;
        }
    }
}
