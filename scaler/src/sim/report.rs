//! Figures from simulated runs: wait percentiles, task-hours, cost per study; and a table.

use std::fmt::Write;

use super::engine::Run;

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub label: String,
    pub studies: usize,
    pub wait_p50: f64,
    pub wait_p95: f64,
    pub wait_p99: f64,
    pub wait_max: f64,
    pub task_hours: f64,
    pub mean_tasks: f64,
    pub peak_tasks: u32,
    pub scale_outs: u32,
    pub scale_ins: u32,
    pub unfinished: usize,
}

/// Nearest-rank percentile (`q` in 0..=100) of sorted values; 0 for none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarise(run: &Run) -> Summary {
    let mut w = run.waits.clone();
    w.sort_by(f64::total_cmp);
    Summary {
        label: run.label.clone(),
        studies: w.len(),
        wait_p50: percentile(&w, 50.0),
        wait_p95: percentile(&w, 95.0),
        wait_p99: percentile(&w, 99.0),
        wait_max: w.last().copied().unwrap_or(0.0),
        task_hours: run.task_hours(),
        mean_tasks: run.mean_tasks(),
        peak_tasks: run.samples.iter().map(|s| s.tasks).max().unwrap_or(0),
        scale_outs: run.scale_outs,
        scale_ins: run.scale_ins,
        unfinished: run.unfinished,
    }
}

impl Summary {
    /// Cost of one study at `price` per task-hour.
    pub fn cost_per_study(&self, price: f64) -> f64 {
        if self.studies == 0 {
            0.0
        } else {
            self.task_hours * price / self.studies as f64
        }
    }
}

/// A plain-text table: one row per run, one cost column per price.
pub fn table(rows: &[Summary], prices: &[f64]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<22} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6} {:>5} {:>7}",
        "sizing", "studies", "p50 s", "p95 s", "p99 s", "max s", "task-h", "mean", "peak", "out/in"
    );
    for p in prices {
        let _ = write!(out, " {:>12}", format!("$/study@{p}"));
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:<22} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.2} {:>6.2} {:>5} {:>7}",
            r.label,
            r.studies,
            r.wait_p50,
            r.wait_p95,
            r.wait_p99,
            r.wait_max,
            r.task_hours,
            r.mean_tasks,
            r.peak_tasks,
            format!("{}/{}", r.scale_outs, r.scale_ins)
        );
        for p in prices {
            let _ = write!(out, " {:>12.5}", r.cost_per_study(*p));
        }
        if r.unfinished > 0 {
            let _ = write!(out, "  ({} never started)", r.unfinished);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
