//! The worker's side of a NIfTI upload: an upload (`uploads/<case>.zip`, or `uploads/<case>/`
//! closed by `COMPLETE`) holding NIfTI files becomes `results/<case>/<case>_seg.nii.gz` and
//! `results/<case>/volumes.json` in the same store.
//!
//! An upload is a NIfTI upload when any of its files is named `.nii` / `.nii.gz`; then every file
//! must be NIfTI (a DICOM file beside them is refused, not silently dropped). Nothing is written
//! before the case has been read and segmented, so a bad upload leaves nothing under `results/`;
//! `volumes.json` is written after the label map, so its presence says the result is complete.
//! A redelivered event rewrites the same two objects with the same labels. NIfTI results are not
//! sent to the DICOM destinations (a SEG needs DICOM source images to reference).

use std::time::Instant;

use staging::ObjectKey;
use tracing::info;

use crate::error::SegmentError;
use crate::nifti_case::{check_case_name, is_nifti_name, output_values, segment_case, CaseFile};
use crate::upload::{case_name, Fetched};
use crate::worker::WorkerContext;

/// Whether the fetched upload is a NIfTI case.
pub fn is_nifti_upload(fetched: &Fetched) -> bool {
    fetched.files.iter().any(|(name, _)| is_nifti_name(name))
}

/// `results/<case>/<name>`, the case name already checked.
fn result_key(case: &str, name: &str) -> Result<ObjectKey, SegmentError> {
    ObjectKey::new(format!("{}{case}/{name}", staging::RESULTS_PREFIX))
        .map_err(|e| SegmentError::BadJob(e.to_string()))
}

/// Segments the case and stores its two results; returns the label map's key (for the log) and
/// no destinations.
pub async fn run(
    ctx: &WorkerContext,
    upload: &ObjectKey,
    fetched: Fetched,
) -> Result<(String, Vec<String>), SegmentError> {
    let upload_err = |message: String| SegmentError::Upload {
        key: upload.to_string(),
        message,
    };
    let case = case_name(upload).ok_or_else(|| upload_err("is not an upload".into()))?;
    check_case_name(&case).map_err(upload_err)?;
    let values = output_values(ctx.model.manifest(), ctx.config.nifti_labels.as_deref())
        .map_err(SegmentError::BadJob)?;
    let files: Vec<CaseFile> = fetched
        .files
        .iter()
        .map(|(name, path)| CaseFile {
            name: name.clone(),
            path: path.clone(),
        })
        .collect();
    let model = ctx.model.clone();
    let c = case.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        // The temporary folder lives until the files are read.
        let _dir = fetched;
        segment_case(&model, &c, &files, &values)
    })
    .await
    .map_err(|source| SegmentError::Task {
        what: "segmentation",
        source,
    })?
    // The dead letter names the upload.
    .map_err(|e| match e {
        e if e.is_permanent() => upload_err(e.to_string()),
        e => e,
    })?;
    let m = &ctx.metrics;
    for (stage, d) in out.timings.stages() {
        m.record(stage, d);
    }
    let seg_key = result_key(&case, &out.seg_name)?;
    let json_key = result_key(&case, "volumes.json")?;
    let volumes: Vec<String> = out
        .segments
        .iter()
        .map(|s| format!("{} {:.2} mL", s.name, s.ml))
        .collect();
    info!(
        case = %case,
        inputs = ?out.chosen,
        ignored = ?out.ignored,
        volumes = ?volumes,
        brain_ml = out.brain_ml.map(|v| format!("{v:.0}")),
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        "NIfTI case segmented"
    );
    for (key, bytes) in [(&seg_key, out.seg_nii_gz), (&json_key, out.volumes_json)] {
        ctx.store
            .put(key, bytes.into())
            .await
            .map_err(|source| SegmentError::Store {
                key: key.as_str().to_string(),
                source,
            })?;
    }
    info!(result = %seg_key, volumes = %json_key, "NIfTI result stored (not sent to DICOM destinations)");
    Ok((seg_key.to_string(), Vec::new()))
}
