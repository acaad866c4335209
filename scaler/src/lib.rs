//! Sizes segnode's workers by queue backlog.
//!
//! - [`policy`]: backlog -> desired task count, pure and replayable (no clock inside).
//! - [`target`]: what gets resized ([`ScaleTarget`]): an ECS service (`ecs`, the `aws` feature,
//!   on by default), the local worker pool ([`pool`]), or nothing (dry run).
//! - [`controller`]: one tick = read the backlog, decide, apply; with [`metrics`].
//! - [`protection`]: ECS task scale-in protection, so a busy worker is never stopped.
//! - [`sim`]: replays arrival traces against the policy (queue waits, task-hours, cost).
//!
//! # Wiring
//!
//! `segnode serve` sizes its in-process workers: its pool implements [`WorkerPool`] (stopping
//! only idle workers) and a controller loop runs beside it:
//!
//! ```ignore
//! let target = Arc::new(scaler::LocalPoolTarget::new(pool.clone() /* Arc<dyn WorkerPool> */));
//! let controller = scaler::Controller::new(queue.clone(), target, policy_config)
//!     .with_metrics(scaler_metrics.clone()); // render() into the /metrics text
//! tokio::spawn(controller.run(Duration::from_secs(5), shutdown_signal()));
//! ```
//!
//! A `segnode worker` on ECS protects its task while it holds a job; the binary reads
//! `ECS_AGENT_URI` (absent outside ECS: no protection needed):
//!
//! ```ignore
//! let protection = std::env::var("ECS_AGENT_URI").ok().map(|u| TaskProtection::new(&u)).transpose()?;
//! // after receiving a job (expiry: longer than the job may take; renew with the heartbeat)
//! if let Some(p) = &protection { p.set(true, Duration::from_secs(60 * 60)).await?; }
//! // ... process, deliver, delete the message ...
//! // when no job is held any more
//! if let Some(p) = &protection { p.set(false, Duration::ZERO).await?; }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "aws")]
pub mod awsjson;
pub mod controller;
#[cfg(feature = "aws")]
pub mod ecs;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod protection;
pub mod sim;
pub mod target;

pub use controller::{Controller, TickError};
#[cfg(feature = "aws")]
pub use ecs::EcsService;
pub use metrics::ScalerMetrics;
pub use policy::{decide, Action, Decision, PolicyConfig, PolicyState, Reason};
pub use pool::{LocalPoolTarget, WorkerPool};
pub use protection::{ProtectionError, TaskProtection};
pub use target::{DryRun, ScaleTarget, TargetError};
