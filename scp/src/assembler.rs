//! Study assembly: a study is complete after a quiet period with no new instance; then its
//! instances are staged to the store and exactly one job is enqueued. Emission is retried
//! with backoff until it succeeds, and resumed after a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use audit::{AuditLog, Caller};
use staging::{Job, JobObject, JobQueue, ObjectKey, ObjectStore, Uid};
use tracing::{info, warn};

use crate::journal::Journal;
use crate::metrics::ScpMetrics;
use crate::provenance::Registry;
use crate::spool::{Spool, JOB_FILE};

/// How long the emitter waits for the journal to confirm that acknowledged instances are in
/// their study folders before it leaves the due studies pending for the next tick.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinct callers remembered per study (for the job and the audit trail); more are not listed.
const MAX_CALLERS: usize = 8;

#[derive(Debug)]
struct Pending {
    last_instance: Instant,
    /// Who sent instances of the study in this run (empty for a study recovered from the spool).
    callers: Vec<Caller>,
}

#[derive(Debug)]
struct Emission {
    study: Uid,
    callers: Vec<Caller>,
    attempts: u32,
    next_try: Instant,
    running: bool,
}

#[derive(Debug)]
pub struct Assembler {
    spool: Arc<Spool>,
    journal: Option<Arc<Journal>>,
    store: Arc<dyn ObjectStore>,
    queue: Arc<dyn JobQueue>,
    metrics: Arc<ScpMetrics>,
    quiet_period: Duration,
    audit: AuditLog,
    /// Who sent each spooled instance: an emitted study's stamps move to its emitted window.
    registry: Arc<Registry>,
    /// When the emitted-window files were last pruned.
    pruned: Mutex<Instant>,
    pending: Mutex<HashMap<Uid, Pending>>,
    emissions: Mutex<HashMap<PathBuf, Emission>>,
}

#[derive(Debug, thiserror::Error)]
enum EmitError {
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] staging::StoreError),
    #[error(transparent)]
    Queue(#[from] staging::QueueError),
    #[error(transparent)]
    Job(#[from] staging::JobError),
    #[error("job file {path}: {message}")]
    JobFile { path: PathBuf, message: String },
}

impl Assembler {
    /// Re-arm quiet-period timers for every study found in the spool and schedule
    /// unfinished emissions: every acknowledged instance ends up in a job.
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        spool: Arc<Spool>,
        journal: Option<Arc<Journal>>,
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn JobQueue>,
        metrics: Arc<ScpMetrics>,
        quiet_period: Duration,
        audit: AuditLog,
        registry: Arc<Registry>,
    ) -> std::io::Result<Arc<Self>> {
        let now = Instant::now();
        let pending: HashMap<Uid, Pending> = spool
            .pending_studies()?
            .into_iter()
            .map(|s| {
                (
                    s,
                    Pending {
                        last_instance: now,
                        callers: Vec::new(),
                    },
                )
            })
            .collect();
        let emissions: HashMap<PathBuf, Emission> = spool
            .emitting()?
            .into_iter()
            .map(|(dir, study)| {
                (
                    dir,
                    Emission {
                        study,
                        callers: Vec::new(),
                        attempts: 0,
                        next_try: now,
                        running: false,
                    },
                )
            })
            .collect();
        if !pending.is_empty() || !emissions.is_empty() {
            info!(
                studies = pending.len(),
                emissions = emissions.len(),
                "recovered spooled studies from a previous run"
            );
        }
        metrics
            .studies_pending
            .store((pending.len() + emissions.len()) as u64, Relaxed);
        Ok(Arc::new(Assembler {
            spool,
            journal,
            store,
            queue,
            metrics,
            quiet_period,
            audit,
            registry,
            pruned: Mutex::new(now),
            pending: Mutex::new(pending),
            emissions: Mutex::new(emissions),
        }))
    }

    /// An instance of `study` was acknowledged: (re)start its quiet period.
    pub fn instance_stored(&self, study: &Uid, caller: &Caller) {
        let mut pending = self.pending.lock().unwrap();
        let entry = pending.entry(study.clone()).or_insert(Pending {
            last_instance: Instant::now(),
            callers: Vec::new(),
        });
        entry.last_instance = Instant::now();
        if entry.callers.len() < MAX_CALLERS && !entry.callers.contains(caller) {
            entry.callers.push(caller.clone());
        }
        self.update_gauge(pending.len());
    }

    fn update_gauge(&self, pending: usize) {
        let emitting = self.emissions.lock().map(|e| e.len()).unwrap_or(0);
        self.metrics
            .studies_pending
            .store((pending + emitting) as u64, Relaxed);
    }

    /// Studies not finished yet (pending or emitting), for tests and health checks.
    pub fn outstanding(&self) -> usize {
        self.pending.lock().unwrap().len() + self.emissions.lock().unwrap().len()
    }

    /// Run until `shutdown` resolves: freeze due studies and emit them.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = (self.quiet_period / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// On shutdown: stage and enqueue every study now, quiet period or not, within `within`.
    /// Studies not done by then stay in the spool (and their instances in the journal) for the
    /// next start, which emits them: a drain cut short loses nothing. Returns how many are left.
    pub async fn drain(self: &Arc<Self>, within: Duration) -> usize {
        let until = Instant::now() + within;
        let studies = self.outstanding();
        if studies == 0 {
            return 0;
        }
        info!(studies, within = ?within, "shutdown: staging the studies still in their quiet period");
        loop {
            self.tick_now(true).await;
            let left = self.outstanding();
            if left == 0 {
                info!(studies, "shutdown: every study staged and enqueued");
                return 0;
            }
            if Instant::now() >= until {
                warn!(
                    left,
                    "shutdown: drain time over; these studies stay in the spool for the next start"
                );
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tick(self: &Arc<Self>) {
        self.tick_now(false).await
    }

    /// Freeze the studies due (all of them with `all`) and start the emissions due.
    async fn tick_now(self: &Arc<Self>, all: bool) {
        let now = Instant::now();
        let mut due: Vec<(Uid, Vec<Caller>)> = {
            let mut pending = self.pending.lock().unwrap();
            let due: Vec<Uid> = pending
                .iter()
                .filter(|(_, p)| all || now.duration_since(p.last_instance) >= self.quiet_period)
                .map(|(s, _)| s.clone())
                .collect();
            due.into_iter()
                .map(|s| {
                    let p = pending.remove(&s).expect("listed");
                    (s, p.callers)
                })
                .collect()
        };
        if !due.is_empty() {
            if let Some(journal) = &self.journal {
                // Every instance acknowledged so far must be in its study folder before the
                // folder is frozen. Bounded: a materializer that cannot sync at all must not
                // stop the emissions below (already frozen studies, retries).
                let held = match tokio::time::timeout(BARRIER_TIMEOUT, journal.barrier()).await {
                    Ok(Ok(blocked)) => blocked,
                    Ok(Err(e)) => {
                        warn!(error = %e, "journal barrier failed; due studies stay pending");
                        due.iter().map(|(s, _)| s.clone()).collect()
                    }
                    Err(_) => {
                        ScpMetrics::inc(&self.metrics.barrier_timeouts);
                        warn!(timeout = ?BARRIER_TIMEOUT, studies = due.len(), "the ingest journal did not confirm its instances in time (see the materializer's warnings); due studies stay pending, emissions go on");
                        due.iter().map(|(s, _)| s.clone()).collect()
                    }
                };
                if !held.is_empty() {
                    let mut pending = self.pending.lock().unwrap();
                    due.retain(|(study, callers)| {
                        if !held.contains(study) {
                            return true;
                        }
                        pending.insert(
                            study.clone(),
                            Pending {
                                last_instance: now,
                                callers: callers.clone(),
                            },
                        );
                        false
                    });
                }
            }
        }
        for (study, callers) in due {
            let frozen = {
                let _guard = self.spool.write_folders().await;
                self.spool.begin_emit(&study)
            };
            match frozen {
                Ok(Some(dir)) => {
                    self.emissions.lock().unwrap().insert(
                        dir,
                        Emission {
                            study,
                            callers,
                            attempts: 0,
                            next_try: now,
                            running: false,
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(study = %study, error = %e, "cannot freeze study for emission; will retry");
                    self.pending.lock().unwrap().insert(
                        study,
                        Pending {
                            last_instance: now,
                            callers,
                        },
                    );
                }
            }
        }
        let ready: Vec<(PathBuf, Uid, Vec<Caller>)> = {
            let mut emissions = self.emissions.lock().unwrap();
            emissions
                .iter_mut()
                .filter(|(_, e)| !e.running && e.next_try <= now)
                .map(|(dir, e)| {
                    e.running = true;
                    (dir.clone(), e.study.clone(), e.callers.clone())
                })
                .collect()
        };
        for (dir, study, callers) in ready {
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.emit(&dir, &study, &callers).await;
                let mut emissions = this.emissions.lock().unwrap();
                let audit_received = |job: &Job, bytes: u64| {
                    this.audit.record(audit::Event::StudyReceived {
                        study_uid: study.to_string(),
                        instances: job.object_count() as u64,
                        bytes,
                        callers: callers.clone(),
                        job_id: Some(job.job_id.clone()),
                    })
                };
                match result {
                    Ok((job, staging::Sent::Accepted, bytes)) => {
                        emissions.remove(&dir);
                        ScpMetrics::inc(&this.metrics.jobs_enqueued);
                        audit_received(&job, bytes);
                    }
                    Ok((job, staging::Sent::Duplicate, bytes)) => {
                        emissions.remove(&dir);
                        audit_received(&job, bytes);
                    }
                    Err(e) => {
                        ScpMetrics::inc(&this.metrics.emit_failures);
                        if let Some(em) = emissions.get_mut(&dir) {
                            em.attempts += 1;
                            let backoff = Duration::from_millis(500 * 2u64.pow(em.attempts.min(7)))
                                .min(Duration::from_secs(60));
                            em.next_try = Instant::now() + backoff;
                            em.running = false;
                            warn!(study = %study, attempt = em.attempts, retry_in = ?backoff, error = %e, "staging or enqueueing a study failed; will retry");
                        }
                    }
                }
                drop(emissions);
                let pending = this.pending.lock().unwrap().len();
                this.update_gauge(pending);
            });
        }
    }

    /// Stage the frozen study's instances, fix its job (once: a retry re-sends the same job)
    /// and enqueue it; only then drop the spooled copies.
    async fn emit(
        &self,
        dir: &Path,
        study: &Uid,
        callers: &[Caller],
    ) -> Result<(Job, staging::Sent, u64), EmitError> {
        let instances = Spool::instances_in(dir)?;
        // Bytes received in this emission (for the audit trail).
        let mut bytes = 0;
        for inst in &instances {
            bytes += std::fs::metadata(&inst.path)?.len();
        }
        let calling_ae = callers.first().map(|c| c.calling_ae.clone());
        for inst in &instances {
            self.store
                .put_file(
                    &ObjectKey::incoming(study, &inst.series, &inst.sop),
                    &inst.path,
                )
                .await?;
        }
        // job.json holds the queue message as it was first sent (its manifest, for a big
        // study, is stored before it is written), so a retry re-sends the same job.
        let job_path = dir.join(JOB_FILE);
        let (job, message) = match std::fs::read_to_string(&job_path) {
            Ok(text) => {
                let job = Job::from_json(&text).map_err(|e| EmitError::JobFile {
                    path: job_path.clone(),
                    message: e.to_string(),
                })?;
                if text.len() > staging::MAX_INLINE_JOB_BYTES {
                    // Written inline by an older build and refused by the queue ever since:
                    // send it as a manifest and a pointer now (same job id).
                    let message = job.to_message(self.store.as_ref()).await?;
                    (job, message)
                } else {
                    (job, text)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The job lists the whole study as staged so far: instances that reopen a
                // study after its first job give a job for the updated study.
                let objects: Vec<JobObject> = self
                    .store
                    .list(&ObjectKey::incoming_study_prefix(study))
                    .await?
                    .into_iter()
                    .filter_map(|key| {
                        let (_, series_uid, sop_uid) = key.parse_incoming()?;
                        Some(JobObject {
                            key,
                            series_uid,
                            sop_uid,
                        })
                    })
                    .collect();
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                // The id covers the bytes received for this emission too: a corrected image
                // under the same UIDs is new work, an identical resend is a duplicate.
                let content = content_of(&instances)?;
                let job = Job::with_content(study.clone(), objects, &content, calling_ae, now_ms);
                // Small and bounded whatever the study's size: a big study's object list
                // goes to a manifest in the store (staging::Job::to_message).
                let message = job.to_message(self.store.as_ref()).await?;
                let tmp = dir.join(".job.json.tmp");
                staging::write_synced(&tmp, message.as_bytes())?;
                std::fs::rename(&tmp, &job_path)?;
                staging::fsync_dir(dir)?;
                (job, message)
            }
            Err(e) => return Err(e.into()),
        };
        let sent = self.queue.send_checked(&message, Some(&job.job_id)).await?;
        // Said as soon as the queue holds it: a worker (or the scaler starting one) may take the
        // job at once, and the log must not show it taken before it was enqueued.
        match sent {
            staging::Sent::Accepted => {
                info!(study = %study, job_id = %job.job_id, instances = job.object_count(), "study complete: job enqueued")
            }
            staging::Sent::Duplicate => {
                info!(study = %study, job_id = %job.job_id, instances = job.object_count(), "study complete: same content as an earlier job; duplicate not enqueued")
            }
        }
        self.keep_emitted_stamps(study, &instances);
        self.spool.finish_emit(dir)?;
        Ok((job, sent, bytes))
    }
}

impl Assembler {
    /// The study's job is on the queue: its instances' provenance stamps stay enforced for the
    /// emitted window (`provenance::EMITTED_WINDOW`), kept in `spool/.provenance/`. Failing to
    /// write that record loses only the window's protection for this study, never an instance:
    /// warned, not retried.
    fn keep_emitted_stamps(&self, study: &Uid, instances: &[crate::spool::SpooledInstance]) {
        let stamps: Vec<(Uid, crate::provenance::Stamp)> = instances
            .iter()
            .filter_map(|i| crate::provenance::read_stamp_file(&i.path).map(|s| (i.sop.clone(), s)))
            .collect();
        if let Err(e) = self.registry.emitted(self.spool.root(), study, &stamps) {
            warn!(study = %study, error = %e, "cannot record the emitted study's provenance; re-sent instances of it are no longer checked");
        }
        let mut pruned = self.pruned.lock().unwrap();
        if pruned.elapsed() > Duration::from_secs(3600) {
            *pruned = Instant::now();
            crate::provenance::prune_emitted_files(
                self.spool.root(),
                crate::provenance::EMITTED_WINDOW,
            );
        }
    }
}

/// [`staging::content_digest`] of the instances of a frozen study folder, by key: of each data
/// set as received (the digest in its provenance stamp; the whole file for one staged by an
/// older build), so the job id does not depend on who sent it or when.
fn content_of(instances: &[crate::spool::SpooledInstance]) -> std::io::Result<String> {
    let mut named: Vec<(String, &Path)> = instances
        .iter()
        .map(|i| (format!("{}/{}", i.series, i.sop), i.path.as_path()))
        .collect();
    named.sort();
    let mut h = Vec::with_capacity(named.len());
    for (name, path) in &named {
        let bytes = match crate::provenance::read_stamp_file(path) {
            Some(stamp) => stamp.digest.to_vec(),
            None => std::fs::read(path)?,
        };
        h.push((name.as_str(), bytes));
    }
    Ok(staging::content_digest(
        h.iter().map(|(n, b)| (*n, b.as_slice())),
    ))
}
