//! Worker counters and per-stage durations, rendered as Prometheus text by the binary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The stages a job goes through, in order.
pub const STAGES: [&str; 8] = [
    "fetch",
    "decode",
    "brain_extraction",
    "preprocess",
    "inference",
    "postprocess",
    "encode",
    "deliver",
];

#[derive(Debug, Default)]
struct StageStat {
    count: AtomicU64,
    sum_us: AtomicU64,
    last_us: AtomicU64,
}

#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub jobs_done: AtomicU64,
    /// Attempts that failed and were released for another try.
    pub jobs_failed: AtomicU64,
    pub jobs_dead_lettered: AtomicU64,
    /// Attempts abandoned at the job deadline (then released or dead-lettered as failures).
    pub jobs_past_deadline: AtomicU64,
    pub busy_workers: AtomicU64,
    pub workers: AtomicU64,
    stages: [StageStat; 8],
    /// Brain volume of the last job with a brain-extraction stage, in µL (0: none yet).
    pub last_brain_ul: AtomicU64,
}

impl WorkerMetrics {
    pub fn record(&self, stage: &str, d: Duration) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            let us = d.as_micros() as u64;
            let s = &self.stages[i];
            s.count.fetch_add(1, Ordering::Relaxed);
            s.sum_us.fetch_add(us, Ordering::Relaxed);
            s.last_us.store(us, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP segnode_jobs_total Jobs by outcome (failed = released for a retry).\n# TYPE segnode_jobs_total counter");
        for (outcome, v) in [
            ("done", c(&self.jobs_done)),
            ("failed", c(&self.jobs_failed)),
            ("dead_lettered", c(&self.jobs_dead_lettered)),
        ] {
            let _ = writeln!(out, "segnode_jobs_total{{outcome=\"{outcome}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP segnode_jobs_past_deadline_total Job attempts abandoned at the job deadline (also counted as failed or dead-lettered).\n# TYPE segnode_jobs_past_deadline_total counter\nsegnode_jobs_past_deadline_total {}",
            c(&self.jobs_past_deadline)
        );
        let _ = writeln!(out, "# HELP segnode_workers Worker tasks, and how many hold a job.\n# TYPE segnode_workers gauge");
        let _ = writeln!(
            out,
            "segnode_workers{{state=\"running\"}} {}",
            c(&self.workers)
        );
        let _ = writeln!(
            out,
            "segnode_workers{{state=\"busy\"}} {}",
            c(&self.busy_workers)
        );
        let _ = writeln!(out, "# HELP segnode_stage_seconds Time spent per job stage.\n# TYPE segnode_stage_seconds summary");
        for (name, s) in STAGES.iter().zip(&self.stages) {
            let _ = writeln!(
                out,
                "segnode_stage_seconds_sum{{stage=\"{name}\"}} {:.6}\nsegnode_stage_seconds_count{{stage=\"{name}\"}} {}",
                c(&s.sum_us) as f64 / 1e6,
                c(&s.count)
            );
        }
        let _ = writeln!(out, "# HELP segnode_stage_last_seconds Duration of each stage in the last job.\n# TYPE segnode_stage_last_seconds gauge");
        for (name, s) in STAGES.iter().zip(&self.stages) {
            let _ = writeln!(
                out,
                "segnode_stage_last_seconds{{stage=\"{name}\"}} {:.6}",
                c(&s.last_us) as f64 / 1e6
            );
        }
        let _ = writeln!(out, "# HELP segnode_brain_ml_last Brain volume (mL) of the last job with brain extraction.\n# TYPE segnode_brain_ml_last gauge");
        let _ = writeln!(
            out,
            "segnode_brain_ml_last {:.3}",
            c(&self.last_brain_ul) as f64 / 1e3
        );
    }

    /// How long `stage` (one of [`STAGES`]) took in the last job that ran it; `None` for a stage
    /// that has not run (or an unknown name).
    pub fn last_stage(&self, stage: &str) -> Option<Duration> {
        let i = STAGES.iter().position(|s| *s == stage)?;
        let s = &self.stages[i];
        (s.count.load(Ordering::Relaxed) > 0)
            .then(|| Duration::from_micros(s.last_us.load(Ordering::Relaxed)))
    }

    /// The brain volume of the last job (mL), if a job had a brain-extraction stage.
    pub fn last_brain_ml(&self) -> Option<f64> {
        match self.last_brain_ul.load(Ordering::Relaxed) {
            0 => None,
            ul => Some(ul as f64 / 1e3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_duration_of_each_stage_is_read_back_typed() {
        let m = WorkerMetrics::default();
        assert_eq!(m.last_stage("inference"), None);
        m.record("inference", Duration::from_millis(120));
        m.record("inference", Duration::from_millis(80));
        assert_eq!(m.last_stage("inference"), Some(Duration::from_millis(80)));
        assert_eq!(m.last_stage("decode"), None);
        assert_eq!(m.last_stage("no such stage"), None);
    }

    #[test]
    fn renders_counters_and_stage_times_as_prometheus_text() {
        let m = WorkerMetrics::default();
        m.jobs_done.fetch_add(2, Ordering::Relaxed);
        m.jobs_dead_lettered.fetch_add(1, Ordering::Relaxed);
        m.record("inference", Duration::from_millis(1500));
        m.record("inference", Duration::from_millis(500));
        m.record("no-such-stage", Duration::from_secs(9));
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("segnode_jobs_total{outcome=\"done\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("segnode_jobs_total{outcome=\"dead_lettered\"} 1\n"));
        assert!(out.contains("segnode_stage_seconds_sum{stage=\"inference\"} 2.000000\n"));
        assert!(out.contains("segnode_stage_seconds_count{stage=\"inference\"} 2\n"));
        assert!(out.contains("segnode_stage_last_seconds{stage=\"inference\"} 0.500000\n"));
        assert!(out.contains("segnode_stage_seconds_count{stage=\"deliver\"} 0\n"));
        assert!(out.contains("segnode_stage_seconds_count{stage=\"brain_extraction\"} 0\n"));
        assert_eq!(m.last_brain_ml(), None);
        m.last_brain_ul.store(1_234_500, Ordering::Relaxed);
        m.render(&mut out);
        assert!(out.contains("segnode_brain_ml_last 1234.500\n"), "{out}");
        assert_eq!(m.last_brain_ml(), Some(1234.5));
    }
}
