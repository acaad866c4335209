//! `volumes.json`: what a result measured, for people and scripts that do not read DICOM SR. One
//! file per case (NIfTI input: `results/<case>/volumes.json`) or per study (DICOM input: beside
//! the SEG, `results/<study>/volumes.json`), the same shape for both:
//!
//! ```json
//! {"schema": "segnode-volumes/1",
//!  "model": {"name": "brats-synth-unet2d", "version": "0.5.0"},
//!  "input": {"kind": "nifti", "case": "BraTS-GLI-00001-000", "reference": "FLAIR",
//!            "channels": {"FLAIR": "BraTS-GLI-00001-000-t2f.nii.gz", ...}},
//!  "voxel_ml": 0.001,
//!  "segments": [{"name": "Necrotic core", "label": 1, "value": 1, "voxels": 1234, "ml": 1.234}, ...],
//!  "regions": [{"name": "WT", "labels": [1, 2, 3], "voxels": 4567, "ml": 4.567}, ...],
//!  "brain_ml": 1523.4,
//!  "timings_s": {"read": 0.4, "decode": 0.4, "brain_extraction": 0.2, ...}}
//! ```
//!
//! `label` is the manifest's label value of the segment; `value` the voxel value written into the
//! NIfTI label map (configurable: BraTS 2023 1/2/3 or BraTS 2018-2021 1/2/4); DICOM input has no
//! `value` (a SEG has segment numbers) and names the study, series and SEG instead of files.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::manifest::Manifest;
use crate::pipeline::{Measured, StageTimings};

/// Where the measured labels came from: the `input` object.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    Nifti {
        case: &'a str,
        /// (input name, file name) in channel order.
        channels: &'a [(String, String)],
        four_d: bool,
    },
    Dicom {
        study_uid: &'a str,
        /// (input name, Series Instance UID) in channel order.
        channels: Vec<(String, String)>,
        seg_sop_instance_uid: &'a str,
    },
}

/// The document. `values[label]` is the output value of a label (NIfTI), `None` for DICOM.
/// `extra_timings` come first in `timings_s` (e.g. `fetch`, `read`).
#[allow(clippy::too_many_arguments)]
pub fn volumes_json(
    manifest: &Manifest,
    source: &Source,
    segments: &[Measured],
    regions: &[Measured],
    voxel_ml: f64,
    brain_ml: Option<f64>,
    values: Option<&[u8; 256]>,
    timings: &StageTimings,
    extra_timings: &[(&str, Duration)],
) -> Value {
    let reference = manifest.file.geometry.reference_input.as_str();
    let input = match source {
        Source::Nifti {
            case,
            channels,
            four_d,
        } => json!({
            "kind": "nifti",
            "case": case,
            "reference": reference,
            "four_d": four_d,
            "channels": channels.iter().map(|(c, f)| (c.clone(), json!(f))).collect::<Map<_, _>>(),
        }),
        Source::Dicom {
            study_uid,
            channels,
            seg_sop_instance_uid,
        } => json!({
            "kind": "dicom",
            "study_uid": study_uid,
            "reference": reference,
            "series": channels.iter().map(|(c, s)| (c.clone(), json!(s))).collect::<Map<_, _>>(),
            "seg_sop_instance_uid": seg_sop_instance_uid,
        }),
    };
    let segs: Vec<Value> = segments
        .iter()
        .map(|m| {
            let label = m.labels[0];
            let mut o = json!({"name": m.name, "label": label, "voxels": m.voxels, "ml": m.ml});
            if let Some(v) = values {
                o["value"] = json!(v[label as usize]);
            }
            o
        })
        .collect();
    let regs: Vec<Value> = regions
        .iter()
        .map(|m| json!({"name": m.name, "labels": m.labels, "voxels": m.voxels, "ml": m.ml}))
        .collect();
    let mut t = Map::new();
    for (name, d) in extra_timings {
        t.insert(name.to_string(), json!(d.as_secs_f64()));
    }
    for (name, d) in timings.stages() {
        t.insert(name.to_string(), json!(d.as_secs_f64()));
    }
    json!({
        "schema": "segnode-volumes/1",
        "model": {"name": manifest.name(), "version": manifest.version()},
        "input": input,
        "voxel_ml": voxel_ml,
        "segments": segs,
        "regions": regs,
        "brain_ml": brain_ml,
        "timings_s": t,
    })
}

/// `volumes.json` of a DICOM study's outcome (stored beside its SEG), serialised.
pub fn for_dicom(
    manifest: &Manifest,
    out: &crate::pipeline::Outcome,
    extra_timings: &[(&str, Duration)],
) -> Vec<u8> {
    let doc = volumes_json(
        manifest,
        &Source::Dicom {
            study_uid: &out.study_uid,
            channels: out
                .chosen
                .iter()
                .map(|c| (c.channel.clone(), c.series_uid.clone()))
                .collect(),
            seg_sop_instance_uid: &out.seg_sop_instance_uid,
        },
        &out.segments,
        &out.regions,
        out.grid.voxel_ml(),
        out.brain_ml,
        None,
        &out.timings,
        extra_timings,
    );
    serde_json::to_vec_pretty(&doc).expect("JSON values serialise")
}
