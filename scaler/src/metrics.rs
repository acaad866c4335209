//! The scaler's figures, rendered as Prometheus text by whoever serves `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::{Action, Decision};

#[derive(Debug, Default)]
pub struct ScalerMetrics {
    visible: AtomicU64,
    in_flight: AtomicU64,
    recommendation: AtomicU64,
    desired: AtomicU64,
    current: AtomicU64,
    holds: AtomicU64,
    scale_outs: AtomicU64,
    scale_ins: AtomicU64,
    errors: AtomicU64,
}

impl ScalerMetrics {
    /// Record one decision, taken on a backlog of `visible` + `in_flight`.
    pub fn record(&self, visible: u64, in_flight: u64, d: &Decision) {
        self.visible.store(visible, Ordering::Relaxed);
        self.in_flight.store(in_flight, Ordering::Relaxed);
        self.recommendation
            .store(d.recommendation.into(), Ordering::Relaxed);
        self.desired.store(d.desired.into(), Ordering::Relaxed);
        self.current.store(d.current.into(), Ordering::Relaxed);
        let counter = match d.action {
            Action::Hold => &self.holds,
            Action::ScaleOut => &self.scale_outs,
            Action::ScaleIn => &self.scale_ins,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A tick that failed (queue or target unreachable).
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn decisions(&self, action: Action) -> u64 {
        match action {
            Action::Hold => &self.holds,
            Action::ScaleOut => &self.scale_outs,
            Action::ScaleIn => &self.scale_ins,
        }
        .load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Append the Prometheus text exposition of these figures to `out`.
    pub fn render(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP segnode_scaler_backlog Queue backlog the last decision saw.\n\
             # TYPE segnode_scaler_backlog gauge\n\
             segnode_scaler_backlog{{state=\"visible\"}} {}\n\
             segnode_scaler_backlog{{state=\"in_flight\"}} {}\n\
             # HELP segnode_scaler_recommended_tasks Tasks the backlog calls for, before stabilisation.\n\
             # TYPE segnode_scaler_recommended_tasks gauge\n\
             segnode_scaler_recommended_tasks {}\n\
             # HELP segnode_scaler_desired_tasks Task count the last decision asked for.\n\
             # TYPE segnode_scaler_desired_tasks gauge\n\
             segnode_scaler_desired_tasks {}\n\
             # HELP segnode_scaler_current_tasks Task count the target reported before the last decision.\n\
             # TYPE segnode_scaler_current_tasks gauge\n\
             segnode_scaler_current_tasks {}\n\
             # HELP segnode_scaler_decisions_total Decisions taken, by action.\n\
             # TYPE segnode_scaler_decisions_total counter\n\
             segnode_scaler_decisions_total{{action=\"hold\"}} {}\n\
             segnode_scaler_decisions_total{{action=\"scale_out\"}} {}\n\
             segnode_scaler_decisions_total{{action=\"scale_in\"}} {}\n\
             # HELP segnode_scaler_errors_total Ticks that failed to read the queue or resize the target.\n\
             # TYPE segnode_scaler_errors_total counter\n\
             segnode_scaler_errors_total {}\n",
            get(&self.visible),
            get(&self.in_flight),
            get(&self.recommendation),
            get(&self.desired),
            get(&self.current),
            get(&self.holds),
            get(&self.scale_outs),
            get(&self.scale_ins),
            get(&self.errors),
        );
    }
}
