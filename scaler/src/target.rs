//! What the scaler resizes: anything with a desired count it can read and set.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use tracing::info;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[cfg(feature = "aws")]
    #[error("ECS {op} for service {service} in cluster {cluster}")]
    Ecs {
        op: &'static str,
        cluster: String,
        service: String,
        #[source]
        source: crate::awsjson::CallError,
    },
}

/// A resizable set of workers.
#[async_trait]
pub trait ScaleTarget: Send + Sync {
    /// A short description for logs ("ecs:cluster/service", "local pool", "dry run").
    fn describe(&self) -> String;
    /// The count the target is currently asked to run (ECS desiredCount, pool size).
    async fn desired(&self) -> Result<u32, TargetError>;
    /// How many are actually running now (informational; ECS runningCount).
    async fn running(&self) -> Result<u32, TargetError> {
        self.desired().await
    }
    /// Ask for `count` workers. Implementations must never stop a worker that holds a job:
    /// ECS relies on task scale-in protection ([`crate::TaskProtection`]), the local pool
    /// stops only idle workers.
    async fn set_desired(&self, count: u32) -> Result<(), TargetError>;
}

/// Changes nothing: remembers the count it was told (starting from `initial`) and logs.
#[derive(Debug, Default)]
pub struct DryRun {
    count: AtomicU32,
}

impl DryRun {
    pub fn new(initial: u32) -> Self {
        DryRun {
            count: AtomicU32::new(initial),
        }
    }
}

#[async_trait]
impl ScaleTarget for DryRun {
    fn describe(&self) -> String {
        "dry run".into()
    }
    async fn desired(&self) -> Result<u32, TargetError> {
        Ok(self.count.load(Ordering::SeqCst))
    }
    async fn set_desired(&self, count: u32) -> Result<(), TargetError> {
        let was = self.count.swap(count, Ordering::SeqCst);
        info!(
            from = was,
            to = count,
            "dry run: would set the desired count"
        );
        Ok(())
    }
}
