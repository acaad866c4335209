//! What can go wrong between a job and a delivered SEG, and whether trying again can help.

/// A failed step. [`SegmentError::is_permanent`] tells the worker whether the job goes to the
/// dead-letter queue at once (the study itself is unusable: retrying gives the same answer) or is
/// released for another attempt (I/O, network, a destination that is down).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("model manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    #[error("{0}")]
    MissingSeries(String),
    #[error("series {series_uid}: {message}")]
    Geometry { series_uid: String, message: String },
    #[error("instance {sop_uid}: {message}")]
    Instance { sop_uid: String, message: String },
    #[error("cannot decode pixel data of {sop_uid} (transfer syntax {transfer_syntax}): {source}")]
    Decode {
        sop_uid: String,
        transfer_syntax: String,
        /// Boxed: dicom-pixeldata's error is large, and every `Result` of the pipeline carries this enum.
        #[source]
        source: Box<crate::volume::DecodeError>,
    },
    #[error("the job is not usable: {0}")]
    BadJob(String),
    /// One of the job's own result destinations cannot be parsed.
    #[error("the job is not usable: {0}")]
    BadDestination(#[from] crate::deliver::DestinationError),
    #[error("upload {key}: {message}")]
    Upload { key: String, message: String },
    /// One file of an upload is unreadable or not a usable DICOM instance.
    #[error("upload {key}: {source}")]
    UploadFile {
        key: String,
        #[source]
        source: Box<crate::upload::UploadFileError>,
    },
    /// A NIfTI input (a file of an upload or of a folder) that cannot be used.
    #[error("NIfTI input {file}: {message}")]
    Nifti { file: String, message: String },
    #[error("building the DICOM-SEG: {0}")]
    Seg(#[from] dicom_seg::SegError),
    /// The staging store failed on one object (or listing): transient, retried.
    #[error("staging store: {key}: {source}")]
    Store {
        /// The object key, or `listing <prefix>`.
        key: String,
        #[source]
        source: staging::StoreError,
    },
    /// An object an event names is not in a file store fed by an FSx data-repository association
    /// yet (the import lags the event): transient, retried.
    #[error("staging store: {key}: not on the file system yet (the association's import lags the event)")]
    NotImported { key: String },
    /// A version-2 job's manifest could not be read for a reason another attempt may cure.
    #[error("staging store: {0}")]
    JobManifest(#[source] staging::JobError),
    #[error("delivery to {destination}: {message}")]
    Delivery {
        destination: String,
        message: String,
    },
    /// Local I/O (temporary files of an upload).
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task (parse, unzip, segmentation) panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The SEG SOP Instance UID the pipeline made is not a valid store key.
    #[error("SEG UID {uid}: {source}")]
    SegUid {
        uid: String,
        #[source]
        source: staging::UidError,
    },
    /// One attempt took longer than the job deadline (a hung read or destination): abandoned;
    /// another attempt may succeed, so it is not permanent.
    #[error(
        "the job did not finish within its deadline of {seconds} s (--job-deadline); abandoned"
    )]
    Deadline { seconds: f64 },
    /// The brain mask is implausible (volume out of the manifest's range, or a mask that fills the
    /// field of view): the study is not a head the models can read, so the job fails rather than
    /// delivering a silent wrong SEG.
    #[error("brain extraction: {0}")]
    BrainExtraction(String),
}

impl SegmentError {
    /// True when the same input will fail the same way again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SegmentError::MissingSeries(_)
                | SegmentError::Geometry { .. }
                | SegmentError::Instance { .. }
                | SegmentError::Decode { .. }
                | SegmentError::BadJob(_)
                | SegmentError::BadDestination(_)
                | SegmentError::Upload { .. }
                | SegmentError::UploadFile { .. }
                | SegmentError::Nifti { .. }
                | SegmentError::Seg(_)
                | SegmentError::BrainExtraction(_)
        )
    }
}
