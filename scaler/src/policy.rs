//! The scaling policy: queue backlog in, desired task count out. Pure: no clock, no I/O.
//! Time is given as seconds on any monotonic scale (the binary uses Unix time, the
//! simulator its own clock), so every decision can be replayed in a test.
//!
//! - **Recommendation**: `ceil(backlog / target_per_task)`, backlog = visible + in-flight
//!   (the KEDA aws-sqs-queue convention: work being done keeps its workers), clamped to
//!   `[max(min_tasks, 1), max_tasks]` while there is work.
//! - **Scale out at once**, by at most `max_step_out` per decision when set.
//! - **Scale in slowly**: to the highest recommendation of the last `stabilisation_secs`
//!   (Kubernetes HPA's scale-down stabilisation), and not within `cooldown_secs` of the
//!   previous change. A noisy backlog therefore only ever moves the count up to its peaks.
//! - **Zero**: with `min_tasks = 0`, one task stays until the backlog has been empty for
//!   `idle_secs`; from zero, the first decision that sees `activation` messages scales out.

use serde::{Deserialize, Serialize};

/// What the policy is told to do. All durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Backlog (visible + in-flight messages) one task is expected to carry.
    pub target_per_task: f64,
    /// Floor; 0 allows scaling to zero after `idle_secs`.
    pub min_tasks: u32,
    /// Ceiling.
    pub max_tasks: u32,
    /// Most tasks added by one decision; `None` jumps straight to the recommendation.
    pub max_step_out: Option<u32>,
    /// Scale in only to the highest recommendation seen over this many seconds.
    pub stabilisation_secs: f64,
    /// No scale-in within this many seconds of the previous change (either way).
    pub cooldown_secs: f64,
    /// With `min_tasks = 0`: seconds of empty backlog before the last task goes.
    pub idle_secs: f64,
    /// From zero tasks, scale out once the backlog reaches this many messages.
    pub activation: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            target_per_task: 2.0,
            min_tasks: 0,
            max_tasks: 10,
            max_step_out: None,
            stabilisation_secs: 600.0,
            cooldown_secs: 60.0,
            idle_secs: 600.0,
            activation: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("target per task must be a positive number, not {0}")]
    Target(f64),
    #[error("min tasks {min} is above max tasks {max}")]
    Bounds { min: u32, max: u32 },
    #[error("max tasks must be at least 1")]
    MaxZero,
    #[error("max step out must be at least 1")]
    StepZero,
    #[error("{what} of {value} seconds is not a sensible duration")]
    Duration { what: &'static str, value: f64 },
    #[error("activation threshold must be at least 1 message")]
    Activation,
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.target_per_task.is_finite() && self.target_per_task > 0.0) {
            return Err(ConfigError::Target(self.target_per_task));
        }
        if self.max_tasks == 0 {
            return Err(ConfigError::MaxZero);
        }
        if self.min_tasks > self.max_tasks {
            return Err(ConfigError::Bounds {
                min: self.min_tasks,
                max: self.max_tasks,
            });
        }
        if self.max_step_out == Some(0) {
            return Err(ConfigError::StepZero);
        }
        for (what, value) in [
            ("stabilisation window", self.stabilisation_secs),
            ("cooldown", self.cooldown_secs),
            ("idle period", self.idle_secs),
        ] {
            if !(value.is_finite() && (0.0..1e9).contains(&value)) {
                return Err(ConfigError::Duration { what, value });
            }
        }
        if self.activation == 0 {
            return Err(ConfigError::Activation);
        }
        Ok(())
    }

    /// The floor while there is (or recently was) work: never zero.
    fn active_floor(&self) -> u32 {
        self.min_tasks.max(1).min(self.max_tasks)
    }
}

/// What the policy remembers between decisions; small, and JSON-serialisable so that
/// `segnode scaler tick` can keep it in a file between invocations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyState {
    /// Recommendations inside the stabilisation window that can still be its maximum:
    /// (time, recommendation), times increasing, recommendations strictly decreasing.
    pub window: Vec<(f64, u32)>,
    /// Last time the backlog was non-empty (and counted as work).
    pub last_active: Option<f64>,
    /// Last time the policy changed the count.
    pub last_change: Option<f64>,
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Hold,
    ScaleOut,
    ScaleIn,
}

/// Why a decision came out as it did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The count already matches.
    Steady,
    /// More backlog than the tasks carry.
    Backlog,
    /// Scale-out capped by `max_step_out`.
    StepLimited,
    /// Below `activation` at zero tasks: stay at zero.
    BelowActivation,
    /// A higher recommendation is still inside the stabilisation window.
    Stabilising,
    /// Within the cooldown of the previous change.
    Cooldown,
    /// The backlog is empty but not for `idle_secs` yet: keep one task.
    NotIdleYet,
    /// Scale in to the window's highest recommendation.
    Stabilised,
    /// Idle for `idle_secs`: to the floor (zero when `min_tasks` is 0).
    Idle,
    /// The current count is outside [min, max].
    Bounds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub backlog: u64,
    pub current: u32,
    /// This instant's recommendation, before stabilisation.
    pub recommendation: u32,
    /// What the target should be set to (equal to `current` on `Hold`).
    pub desired: u32,
    pub action: Action,
    pub reason: Reason,
}

/// `ceil(backlog / target)`, saturating.
pub fn recommendation(backlog: u64, target_per_task: f64) -> u32 {
    let r = (backlog as f64 / target_per_task).ceil();
    if r >= u32::MAX as f64 {
        u32::MAX
    } else {
        r as u32
    }
}

/// One decision at time `now` for `backlog` (visible + in-flight) and the target's
/// `current` desired count. Updates `state`; the caller applies `desired` when the action
/// is not `Hold`.
pub fn decide(
    config: &PolicyConfig,
    state: &mut PolicyState,
    now: f64,
    backlog: u64,
    current: u32,
) -> Decision {
    // A fresh state (first run, lost state file, restarted loop) knows nothing of the past:
    // take the running count as if it had just been recommended, so nothing is scaled in
    // before a full window and idle period have been observed.
    if *state == PolicyState::default() && current > 0 {
        state.window.push((now, current.min(config.max_tasks)));
        state.last_active = Some(now);
    }
    // Work keeps (or wakes) the pool; below the activation threshold at zero it does not.
    let active = backlog > 0 && (current > 0 || backlog >= config.activation);
    if active {
        state.last_active = Some(now);
    }
    let rec = if active {
        recommendation(backlog, config.target_per_task)
            .clamp(config.active_floor(), config.max_tasks)
    } else {
        config.min_tasks
    };
    remember(state, now, rec, config.stabilisation_secs);

    let decision = |desired: u32, action, reason| Decision {
        backlog,
        current,
        recommendation: rec,
        desired,
        action,
        reason,
    };

    if current > config.max_tasks {
        state.last_change = Some(now);
        return decision(config.max_tasks, Action::ScaleIn, Reason::Bounds);
    }
    let floor = config.min_tasks;
    // `rec` is never below the floor, so this also lifts a count below `min_tasks`.
    if rec > current {
        let base = if active {
            Reason::Backlog
        } else {
            Reason::Bounds
        };
        let (desired, reason) = match config.max_step_out {
            Some(step) if rec > current.saturating_add(step) => {
                (current.saturating_add(step), Reason::StepLimited)
            }
            _ => (rec, base),
        };
        state.last_change = Some(now);
        return decision(desired, Action::ScaleOut, reason);
    }
    if rec == current {
        let reason = if current == 0 && backlog > 0 {
            Reason::BelowActivation
        } else {
            Reason::Steady
        };
        return decision(current, Action::Hold, reason);
    }

    // rec < current: scale in, carefully.
    let stabilised = state.window.first().map_or(rec, |&(_, r)| r).max(rec);
    let idle_for = state.last_active.map_or(f64::INFINITY, |t| now - t);
    let idle_floor = if idle_for >= config.idle_secs {
        floor
    } else {
        config.active_floor()
    };
    let target = stabilised.max(idle_floor);
    if target >= current {
        let reason = if stabilised >= current {
            Reason::Stabilising
        } else {
            Reason::NotIdleYet
        };
        return decision(current, Action::Hold, reason);
    }
    if let Some(t) = state.last_change {
        if now - t < config.cooldown_secs {
            return decision(current, Action::Hold, Reason::Cooldown);
        }
    }
    state.last_change = Some(now);
    let reason = if target < config.active_floor() {
        Reason::Idle
    } else {
        Reason::Stabilised
    };
    decision(target, Action::ScaleIn, reason)
}

/// Keep the window as a monotonic queue: drop what fell out of it, and every earlier entry
/// that the new one dominates (it can never be the maximum again).
fn remember(state: &mut PolicyState, now: f64, rec: u32, window_secs: f64) {
    state
        .window
        .retain(|&(t, _)| now - t < window_secs && t <= now);
    while state.window.last().is_some_and(|&(_, r)| r <= rec) {
        state.window.pop();
    }
    state.window.push((now, rec));
}
