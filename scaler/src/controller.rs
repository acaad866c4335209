//! One tick: read the backlog, read the target's count, decide, apply. And a loop of ticks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use staging::{JobQueue, QueueError};
use tracing::{info, warn};

use crate::metrics::ScalerMetrics;
use crate::policy::{decide, Action, Decision, PolicyConfig, PolicyState};
use crate::target::{ScaleTarget, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("reading the queue backlog")]
    Queue(#[from] QueueError),
    #[error("scale target")]
    Target(#[from] TargetError),
}

/// The control loop's parts. The policy state lives here between ticks; `tick` mode saves
/// and restores it with [`Controller::state`] / [`Controller::with_state`].
pub struct Controller {
    queue: Arc<dyn JobQueue>,
    target: Arc<dyn ScaleTarget>,
    config: PolicyConfig,
    state: PolicyState,
    metrics: Arc<ScalerMetrics>,
}

impl Controller {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        target: Arc<dyn ScaleTarget>,
        config: PolicyConfig,
    ) -> Self {
        Controller {
            queue,
            target,
            config,
            state: PolicyState::default(),
            metrics: Arc::new(ScalerMetrics::default()),
        }
    }

    pub fn with_state(mut self, state: PolicyState) -> Self {
        self.state = state;
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<ScalerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    pub fn metrics(&self) -> Arc<ScalerMetrics> {
        self.metrics.clone()
    }

    /// One evaluation at `now` (seconds, the same scale on every tick: Unix time in
    /// practice). Applies the decision to the target unless it is a hold.
    pub async fn tick(&mut self, now: f64) -> Result<Decision, TickError> {
        let result = self.tick_inner(now).await;
        if result.is_err() {
            self.metrics.record_error();
        }
        result
    }

    async fn tick_inner(&mut self, now: f64) -> Result<Decision, TickError> {
        let backlog = self.queue.backlog().await?;
        let current = self.target.desired().await?;
        let d = decide(&self.config, &mut self.state, now, backlog.total(), current);
        if d.action != Action::Hold {
            self.target.set_desired(d.desired).await?;
            info!(
                target_name = %self.target.describe(),
                visible = backlog.visible,
                in_flight = backlog.in_flight,
                from = d.current,
                to = d.desired,
                reason = ?d.reason,
                "scaled"
            );
        } else {
            tracing::debug!(visible = backlog.visible, in_flight = backlog.in_flight, current, reason = ?d.reason, "hold");
        }
        self.metrics.record(backlog.visible, backlog.in_flight, &d);
        Ok(d)
    }

    /// Tick every `interval` until `shutdown` completes. A failed tick is logged and counted;
    /// the loop goes on (the next tick may reach the queue again).
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.tick(unix_now()).await {
                        warn!(error = %chain(&e), "scaler tick failed");
                    }
                }
            }
        }
    }
}

/// Seconds since the Unix epoch: the time scale of `run` and of `tick` state files.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An error and its sources, `: `-separated (what `anyhow`'s `{:#}` prints).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
