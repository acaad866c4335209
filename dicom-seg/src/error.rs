//! Errors of this crate: every inconsistent input is reported, never printed or panicked on.

use thiserror::Error;

/// Everything that can go wrong while building or reading a Segmentation.
#[derive(Debug, Error)]
#[non_exhaustive]
#[allow(missing_docs)] // field names are self-explanatory; the variant docs say what they hold
pub enum SegError {
    /// A string is not an acceptable DICOM UID (digits and dots, at most 64 characters, no empty
    /// component; an organisation root must also be conformant: no leading zero in a component).
    #[error(transparent)]
    InvalidUid(#[from] dicom_values::UidError),

    /// A source image lacks an attribute the SEG needs, or has a malformed one.
    #[error("source image {sop_instance_uid}: attribute {attribute} {problem}")]
    SourceAttribute {
        sop_instance_uid: String,
        attribute: &'static str,
        problem: &'static str,
    },

    /// No source image was given.
    #[error("no source images given")]
    NoSourceImages,

    /// Source images that disagree about something that must be common to all frames.
    #[error("source images are inconsistent: {what} differs ({first} vs {other})")]
    InconsistentSources {
        what: &'static str,
        first: String,
        other: String,
    },

    /// Two source frames occupy the same position along the slice normal.
    #[error("source frames {first} and {second} share the same position along the normal")]
    DuplicatePosition { first: String, second: String },

    /// The same source instance (and frame) was given twice.
    #[error("source instance {0} given more than once")]
    DuplicateSource(String),

    /// Image orientation vectors are not unit length or not orthogonal.
    #[error("invalid Image Orientation (Patient) {0:?}")]
    InvalidOrientation([f64; 6]),

    /// The mask array does not have the shape of the source grid.
    #[error("mask for {what} has shape {got:?}, the source grid is {expected:?} (frames, rows, columns)")]
    MaskShape {
        what: String,
        got: Vec<usize>,
        expected: [usize; 3],
    },

    /// A mask or label value refers to a segment that is not described.
    #[error("segment number {0} is used by a mask but not described")]
    UnknownSegment(u32),

    /// The same segment is described or given a mask twice.
    #[error("segment number {0} given more than once")]
    DuplicateSegment(u16),

    /// Segment numbers must start at 1 and increase by 1 (PS3.3 C.8.20.2).
    #[error("segment numbers must be 1..=n without gaps; got {0:?}")]
    NonContiguousSegments(Vec<u16>),

    /// No segment was described.
    #[error("no segment described")]
    NoSegments,

    /// A fractional value outside 0..=1 (or NaN).
    #[error("fractional value {value} at {index:?} of segment {segment} is outside 0..=1")]
    FractionalOutOfRange {
        segment: u16,
        index: [usize; 3],
        value: f32,
    },

    /// A coded concept is unusable (empty fields, a retired coding scheme).
    #[error("invalid coded concept ({value}, {scheme}, {meaning:?}): {reason}")]
    InvalidCode {
        value: String,
        scheme: String,
        meaning: String,
        reason: &'static str,
    },

    /// A string does not fit its DICOM value representation.
    #[error("{attribute} value {value:?} {reason}")]
    InvalidValue {
        attribute: &'static str,
        value: String,
        reason: &'static str,
    },

    /// The source grid is larger than a SEG can describe.
    #[error("too many frames: {0} (a SEG holds at most 2^31-1 frames and 65535 segments)")]
    TooLarge(usize),

    /// The object read is not a Segmentation this reader understands.
    #[error("not a readable Segmentation: {0}")]
    NotASegmentation(String),

    /// A SEG attribute is missing or malformed.
    #[error("SEG attribute {attribute} {problem}")]
    SegAttribute {
        attribute: &'static str,
        problem: String,
    },

    /// A SEG frame cannot be placed on the given source grid.
    #[error("SEG frame {frame} cannot be mapped onto the source grid: {reason}")]
    UnmappedFrame { frame: usize, reason: String },

    /// The SEG and the source images are in different frames of reference.
    #[error("frame of reference differs: SEG {seg} vs source {source_for}")]
    FrameOfReferenceMismatch { seg: String, source_for: String },

    /// Encoding or writing the Part-10 file failed (dicom-object's encoder or the writer).
    #[error("writing DICOM failed: {what}: {source}")]
    Write {
        /// The step: `file meta group`, `data set`, `output`.
        what: &'static str,
        #[source]
        source: BoxError,
    },

    /// The Pixel Data does not fit in the 32-bit length of an explicit-VR element.
    #[error("writing DICOM failed: Pixel Data of {0} bytes is longer than 4 GiB")]
    PixelDataTooLong(usize),

    /// Reading or parsing a DICOM byte stream failed (dicom-object's parser or the reader).
    #[error("reading DICOM failed: {what}: {source}")]
    Read {
        /// The step: `input`, `Part-10 file`.
        what: &'static str,
        #[source]
        source: BoxError,
    },

    /// An element header or length runs past the end of the input (checked before any parse, so a
    /// corrupted length is this error rather than a huge allocation).
    #[error("reading DICOM failed: truncated or corrupted input: {0}")]
    Truncated(&'static str),
}

/// The underlying error of [`SegError::Write`] and [`SegError::Read`]: dicom-object's encoder and
/// parser errors or an `io::Error`, kept (not flattened to text) so a caller can walk the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl SegError {
    pub(crate) fn write(what: &'static str, source: impl Into<BoxError>) -> Self {
        SegError::Write {
            what,
            source: source.into(),
        }
    }
    pub(crate) fn read(what: &'static str, source: impl Into<BoxError>) -> Self {
        SegError::Read {
            what,
            source: source.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SegError> = std::result::Result<T, E>;
