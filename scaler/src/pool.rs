//! The local backend: the worker pool inside `segnode serve`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::target::{ScaleTarget, TargetError};

/// A pool of in-process workers the scaler can resize.
///
/// The contract the implementation must keep: `resize` to fewer workers than `size()` stops
/// **idle** workers only. A worker holding a job finishes it (and deletes its message) before
/// it stops; until then it still counts in `size()`. Growing starts workers at once.
pub trait WorkerPool: Send + Sync {
    /// Workers that exist now, busy or idle (those asked to stop but still finishing a job
    /// included).
    fn size(&self) -> usize;
    /// Workers holding a job now.
    fn busy(&self) -> usize;
    /// Ask for `n` workers: start more, or stop idle ones (busy ones stop when done).
    fn resize(&self, n: usize);
}

/// [`ScaleTarget`] over a [`WorkerPool`].
pub struct LocalPoolTarget {
    pool: Arc<dyn WorkerPool>,
}

impl LocalPoolTarget {
    pub fn new(pool: Arc<dyn WorkerPool>) -> Self {
        LocalPoolTarget { pool }
    }
}

#[async_trait]
impl ScaleTarget for LocalPoolTarget {
    fn describe(&self) -> String {
        "local pool".into()
    }
    async fn desired(&self) -> Result<u32, TargetError> {
        Ok(u32::try_from(self.pool.size()).unwrap_or(u32::MAX))
    }
    async fn set_desired(&self, count: u32) -> Result<(), TargetError> {
        self.pool.resize(count as usize);
        Ok(())
    }
}
