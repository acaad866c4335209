//! # segmenter
//!
//! The worker side of segnode: a queued study becomes a DICOM-SEG on the destinations.
//!
//! - [`manifest`]: the model manifest (`models/<name>/model.toml`), validated, ONNX checksum verified;
//! - [`study`], [`select`]: the job's instances grouped by series, series matched to input channels;
//! - [`volume`]: pixels decoded (every transfer syntax the SCP accepts) and stacked on a checked grid;
//! - [`brain`]: the optional brain-extraction stage (`[brain_extraction]`), run before the model;
//! - [`preprocess`], [`model`], [`postprocess`]: resampling and normalisation as the manifest says,
//!   tract-onnx inference, argmax back on the reference grid and clean-up;
//! - [`canonical`], [`normalize`], [`patch3d`]: `geometry.kind = "patch3d"` models (canonical grid,
//!   normalisations, MONAI/nnU-Net sliding window, output back on the reference grid);
//! - [`pipeline`]: all of the above for one study, with per-stage timings, ending in SEG bytes.
// `deny`, not `forbid`: ndarray's `s![]` macro expands to an `#[allow(unsafe_code)]` block of
// its own (`SliceInfo::new_unchecked`), which `forbid` refuses; no `unsafe` of ours is allowed.
#![deny(unsafe_code)]

pub mod brain;
pub mod canonical;
pub mod check;
pub mod error;
pub mod folder;
pub mod jpeg_ls;
pub mod manifest;
pub mod model;
pub mod nifti;
pub mod nifti_case;
pub mod nifti_upload;
pub mod normalize;
pub mod patch3d;
pub mod pipeline;
pub mod postprocess;
pub mod preprocess;
pub mod select;
pub mod study;
pub mod truth;
pub mod volume;
pub mod volumes_json;

pub use error::SegmentError;
pub use manifest::Manifest;
pub use model::Model;
pub use pipeline::{segment_study, Outcome, SegSettings, StageTimings};
pub mod deliver;
pub mod metrics;
pub mod stow;
pub mod tls_client;
pub mod upload;
pub mod worker;
