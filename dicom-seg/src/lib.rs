//! # dicom-seg
//!
//! Build DICOM Segmentation objects (PS3.3 A.51, C.8.20) from a segmenter's masks on the grid of the
//! source images, and read them back.
//!
//! ```no_run
//! use dicom_seg::*;
//! # fn demo(sources: &[dicom_object::InMemDicomObject], labels: ndarray::ArrayView3<u16>) -> Result<()> {
//! let source = SourceSeries::from_datasets(sources)?;
//! let algo = AlgorithmIdentification {
//!     family: codes::artificial_intelligence(),
//!     name: "segnode-unet".into(),
//!     version: "1.0".into(),
//!     parameters: None,
//!     source: None,
//! };
//! let seg = SegmentationBuilder::new(
//!     &source,
//!     Equipment {
//!         manufacturer: "segnode".into(),
//!         model_name: "segnode".into(),
//!         device_serial_number: "0".into(),
//!         software_versions: "0.1.0".into(),
//!     },
//!     ContentIdentification::new("TUMOUR", None, None)?,
//! )
//! .segment(SegmentDescription::automatic(
//!     SegmentNumber::new(1).unwrap(),
//!     "Necrosis",
//!     codes::morphologically_abnormal_structure(),
//!     codes::necrosis(),
//!     algo,
//! ))
//! .sop_instance_uid(Uid::derived_from("job-42"))
//! .build(Masks::Labels(labels))?;
//! let bytes = seg.to_bytes()?;
//! let back = ReadSegmentation::from_bytes(&bytes)?;
//! let masks = back.masks_on(&source)?; // (segments, frames, rows, columns)
//! # Ok(()) }
//! ```
// `deny`, not `forbid`: ndarray's `s![]` macro expands to an `#[allow(unsafe_code)]` block of
// its own (`SliceInfo::new_unchecked`), which `forbid` refuses; no `unsafe` of ours is allowed.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod code;
mod ds;
mod encode;
mod error;
mod pixels;
mod reader;
mod source;
mod sr;
mod uid;

pub use builder::{
    implementation_class_uid, AlgorithmIdentification, ContentIdentification, Equipment,
    FractionalType, Masks, SegmentAlgorithm, SegmentDescription, SegmentNumber, Segmentation,
    SegmentationBuilder, IMPLEMENTATION_VERSION_NAME, MAX_FRACTIONAL_VALUE,
};
pub use code::{codes, CodedConcept, DicomLab};
pub use error::{Result, SegError};
pub use reader::{ReadSegment, ReadSegmentation, SegFrame, SegmentationType, SourceRef};
pub use source::{SeriesGeometry, SourceFrame, SourceSeries, StudyHeader};
pub use sr::{
    ReportAlgorithm, VolumeMeasurement, VolumeReport, VolumeReportBuilder,
    COMPREHENSIVE_3D_SR_STORAGE,
};
pub use uid::{Uid, UidError, UidGenerator};
