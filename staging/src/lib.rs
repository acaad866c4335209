//! The contracts every room of segnode shares: where objects are staged ([`ObjectStore`]),
//! how jobs travel ([`JobQueue`]), what a job says ([`Job`]) and how UIDs become keys
//! ([`Uid`], [`ObjectKey`]). Embedded defaults (a local folder, an SQLite file) and their
//! AWS counterparts (S3, SQS; the `aws` feature, on by default) behave the same behind the traits.
#![forbid(unsafe_code)]

mod aws;
pub mod job;
pub mod keys;
pub mod logsafe;
pub mod message;
pub mod queue;
#[cfg(feature = "aws")]
pub mod s3;
pub mod sqlite_queue;
#[cfg(feature = "aws")]
pub mod sqs;
pub mod store;
pub mod uid;

#[cfg(feature = "aws")]
pub use aws::sdk_config;
pub use aws::AwsSettings;
pub use job::{
    content_digest, derive_job_id, Job, JobError, JobObject, ManifestRef, ResultTarget,
    INLINE_JOB_VERSION, JOB_VERSION, MAX_INLINE_JOB_BYTES,
};
pub use keys::{
    KeyError, ObjectKey, UploadKey, INCOMING_PREFIX, RESULTS_PREFIX, UPLOADS_PREFIX,
    UPLOAD_COMPLETE_MARKER,
};
pub use logsafe::{escape, Escaped};
pub use message::{decode_s3_key, parse_message, KeyDecodeError, Message, MessageError, S3Object};
pub use queue::{Backlog, DeadLetter, JobQueue, QueueError, Receipt, Received, Sent};
#[cfg(feature = "aws")]
pub use s3::{S3Settings, S3Store};
pub use sqlite_queue::{QueuedMessage, SqliteQueue};
#[cfg(feature = "aws")]
pub use sqs::{SqsQueue, SqsSettings, REASON_ATTRIBUTE};
pub use store::{fsync_dir, is_out_of_space, write_synced, LocalStore, ObjectStore, StoreError};
pub use uid::{Uid, UidError};
