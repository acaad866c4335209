//! Sizes segnode's workers by queue backlog.
//!
//! - [`policy`]: backlog -> desired task count, pure and replayable (no clock inside).
//! - [`target`]: what gets resized ([`ScaleTarget`]): an ECS service ([`ecs`]), the local
//!   worker pool ([`pool`]), or nothing (dry run).
//! - [`controller`]: one tick = read the backlog, decide, apply; with [`metrics`].
//! - [`protection`]: ECS task scale-in protection, so a busy worker is never stopped.
//! - [`sim`]: replays arrival traces against the policy (queue waits, task-hours, cost).

pub mod controller;
pub mod ecs;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod protection;
pub mod sim;
pub mod target;

pub use controller::{Controller, TickError};
pub use ecs::EcsService;
pub use metrics::ScalerMetrics;
pub use policy::{decide, Action, Decision, PolicyConfig, PolicyState, Reason};
pub use pool::{LocalPoolTarget, WorkerPool};
pub use protection::{ProtectionError, TaskProtection};
pub use target::{DryRun, ScaleTarget, TargetError};
