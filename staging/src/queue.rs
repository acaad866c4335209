//! `JobQueue`: at-least-once delivery of job messages with visibility timeouts and a
//! dead-letter queue. An SQLite file (the embedded default) or SQS.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

/// Proof of one particular receipt of a message; needed to extend, delete or release it.
/// A receipt goes stale when the message's visibility expires and someone else receives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt: Receipt,
    pub body: String,
    /// How many times this message has been received, this time included (1 on first delivery).
    pub receive_count: u32,
}

/// Queue depth as the scaler needs it: work waiting plus work being done (the KEDA
/// aws-sqs-queue convention), so in-flight jobs keep their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub visible: u64,
    pub in_flight: u64,
}

impl Backlog {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the receipt for message {0} is no longer valid (its visibility expired and it was received again, or it was deleted)")]
    StaleReceipt(String),
    #[error("queue database {path}: {message}")]
    Sqlite { path: String, message: String },
    #[error("SQS {op} on {queue}: {message}")]
    Remote {
        op: &'static str,
        queue: String,
        message: String,
    },
    #[error("no dead-letter queue is configured for {0}; set one (SQS redrive policy) so failed jobs are kept")]
    NoDeadLetterQueue(String),
}

/// What became of a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// On the queue (or, where the queue cannot tell, accepted by it).
    Accepted,
    /// Dropped: a message with the same deduplication id was sent within the window.
    Duplicate,
}

#[async_trait]
pub trait JobQueue: Send + Sync + Debug {
    /// Enqueue `body`. With a `dedup_id`, a second send with the same id (within the
    /// queue's deduplication window) is dropped: crash recovery may re-send a job.
    async fn send(&self, body: &str, dedup_id: Option<&str>) -> Result<(), QueueError>;
    /// [`JobQueue::send`], saying whether the queue dropped the message as a duplicate of
    /// `dedup_id`. A queue that cannot tell (SQS) answers [`Sent::Accepted`].
    async fn send_checked(&self, body: &str, dedup_id: Option<&str>) -> Result<Sent, QueueError> {
        self.send(body, dedup_id).await.map(|()| Sent::Accepted)
    }
    /// Receive up to `max` messages, hiding them for `visibility`; waits up to `wait` for one.
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError>;
    /// Heartbeat: keep the message hidden for another `visibility` from now.
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError>;
    /// The job is done: remove the message for good.
    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError>;
    /// Give the message back: visible again after `delay` (0 on shutdown, a backoff on failure).
    async fn release(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError>;
    /// Move the message to the dead-letter queue now, with the reason, and delete it here.
    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError>;
    async fn backlog(&self) -> Result<Backlog, QueueError>;
    /// Up to `max` dead letters, for operators and tests.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// After this many receives without a delete a message goes to the dead-letter queue.
    fn max_receives(&self) -> u32;
    fn location(&self) -> String;
}
