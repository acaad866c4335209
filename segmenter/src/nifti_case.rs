//! A NIfTI case: the files of an upload (`uploads/<case>/` closed by `COMPLETE`, or
//! `uploads/<case>.zip`) or of a folder (`segnode segment DIR`) -> one volume per model input ->
//! labels on the reference input's grid -> `<case>_seg.nii.gz` and `volumes.json`.
//!
//! Inputs are found by the manifest's `[[inputs]] file_names` (regexes on each file's base name;
//! the shipped manifest accepts both BraTS namings), or, when the case is one file matching no
//! pattern, as one 4D file whose channel order the manifest states (`[nifti] channels_4d`).
//! Geometry comes from each file's sform (else qform, else pixdim; nibabel's `get_best_affine`),
//! and every other input is resampled onto the reference input's grid exactly as the DICOM path
//! resamples other series, then the shared [`crate::pipeline::label_on_reference`] runs.
//! Errors are permanent ([`SegmentError::Nifti`], [`SegmentError::MissingSeries`]): the upload is
//! dead-lettered at once with the reason, and nothing is written.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array3;

use crate::error::SegmentError;
use crate::manifest::Manifest;
use crate::model::Model;
use crate::nifti::{self, Header, Placement};
use crate::pipeline::{label_on_reference, Measured, StageTimings};
use crate::preprocess::resample_trilinear;
use crate::volume::Grid;
use crate::volumes_json::{volumes_json, Source};

/// One file of a case: its name in the upload or folder (for matching and messages) and where its
/// bytes are.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub name: String,
    pub path: PathBuf,
}

/// The file's base name (after the last `/`).
pub fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// `.nii` or `.nii.gz`, any case.
pub fn is_nifti_name(name: &str) -> bool {
    let l = base_name(name).to_ascii_lowercase();
    l.ends_with(".nii") || l.ends_with(".nii.gz")
}

/// A case name becomes a key segment (`results/<case>/`) and a file name prefix: 1-128 of
/// `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn check_case_name(case: &str) -> Result<(), String> {
    let ok = !case.is_empty()
        && case.len() <= 128
        && !case.starts_with('.')
        && case
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "case name {:?} is not usable as a result name: use 1-128 of A-Z a-z 0-9 . _ - (not starting with a dot)",
            staging::escape(case)
        ))
    }
}

/// The voxel value written for each manifest label: `values[n]` for the manifest's n-th segment
/// (e.g. `[1, 2, 4]` for BraTS 2018-2021), or the manifest's own label values when `None`.
pub fn output_values(manifest: &Manifest, values: Option<&[u8]>) -> Result<[u8; 256], String> {
    let segments = &manifest.file.segments;
    let mut map = [0u8; 256];
    match values {
        None => {
            for s in segments {
                map[s.label as usize] = s.label;
            }
        }
        Some(v) => {
            if v.len() != segments.len() {
                return Err(format!(
                    "{} output label values given for the model's {} segments ({})",
                    v.len(),
                    segments.len(),
                    segments
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let mut seen = v.to_vec();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != v.len() || v.contains(&0) {
                return Err(format!(
                    "output label values {v:?} must be distinct and non-zero (0 is background)"
                ));
            }
            for (s, &x) in segments.iter().zip(v) {
                map[s.label as usize] = x;
            }
        }
    }
    Ok(map)
}

/// One model input read from a file.
#[derive(Debug)]
pub struct ChannelInput {
    /// The input's name in the manifest.
    pub channel: String,
    pub file: String,
    pub grid: Grid,
    /// On `grid` (slices ascending along its normal).
    pub data: Array3<f32>,
}

/// The inputs of a case, in channel order, and the reference input's header and placement (the
/// output is written on its grid, in its voxel order, with its geometry fields).
#[derive(Debug)]
pub struct Inputs {
    pub channels: Vec<ChannelInput>,
    pub reference: Header,
    pub placement: Placement,
    pub four_d: bool,
    /// NIfTI files that match no input (e.g. a `_seg.nii.gz` ground truth): not read.
    pub ignored: Vec<String>,
}

fn nifti_err(file: &str, message: impl Into<String>) -> SegmentError {
    SegmentError::Nifti {
        file: staging::escape(file),
        message: message.into(),
    }
}

fn read_file(f: &CaseFile) -> Result<nifti::NiftiImage, SegmentError> {
    let bytes = std::fs::read(&f.path).map_err(|source| SegmentError::Io {
        what: "reading a fetched NIfTI file",
        source,
    })?;
    nifti::read(&bytes).map_err(|e| nifti_err(&f.name, e.0))
}

/// Matches `files` to the manifest's inputs and reads them. Every file must be NIfTI; a case
/// without a file for an input, with two files for one input, or whose 4D file's volume count is
/// not the manifest's channel count fails with the reason.
pub fn read_inputs(manifest: &Manifest, files: &[CaseFile]) -> Result<Inputs, SegmentError> {
    if let Some(f) = files.iter().find(|f| !is_nifti_name(&f.name)) {
        return Err(nifti_err(
            &f.name,
            "is not a NIfTI file (.nii or .nii.gz); a NIfTI upload holds only NIfTI files",
        ));
    }
    if files.is_empty() {
        return Err(SegmentError::MissingSeries(
            "the case holds no NIfTI files".into(),
        ));
    }
    let rules = &manifest.rules;
    let matches = |f: &CaseFile| -> Vec<usize> {
        let base = base_name(&f.name);
        (0..rules.len())
            .filter(|&r| rules[r].file_names.iter().any(|p| p.is_match(base)))
            .collect()
    };
    let matched: Vec<Vec<usize>> = files.iter().map(matches).collect();
    if files.len() == 1 && matched[0].is_empty() {
        return read_4d(manifest, &files[0]);
    }
    let mut chosen: Vec<Option<&CaseFile>> = vec![None; rules.len()];
    let mut ignored = Vec::new();
    for (f, m) in files.iter().zip(&matched) {
        match m.as_slice() {
            [] => ignored.push(f.name.clone()),
            [r] => {
                if let Some(other) = chosen[*r] {
                    return Err(nifti_err(
                        &f.name,
                        format!(
                            "and {:?} both match input {}: one file per contrast",
                            staging::escape(&other.name),
                            rules[*r].name
                        ),
                    ));
                }
                chosen[*r] = Some(f);
            }
            many => {
                let names: Vec<&str> = many.iter().map(|&r| rules[r].name.as_str()).collect();
                return Err(nifti_err(
                    &f.name,
                    format!("matches several inputs ({}): rename it", names.join(", ")),
                ));
            }
        }
    }
    let missing: Vec<String> = rules
        .iter()
        .zip(&chosen)
        .filter(|(_, c)| c.is_none())
        .map(|(r, _)| {
            let pats: Vec<&str> = r.file_names.iter().map(|p| p.as_str()).collect();
            format!("{} (a file name matching {})", r.name, pats.join(" or "))
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = files.iter().map(|f| staging::escape(&f.name)).collect();
        return Err(SegmentError::MissingSeries(format!(
            "missing NIfTI input(s): {}; the case holds {}",
            missing.join("; "),
            names.join(", ")
        )));
    }
    let mut channels = Vec::with_capacity(rules.len());
    let mut reference = None;
    for (r, f) in rules.iter().zip(chosen) {
        let f = f.expect("checked above");
        let img = read_file(f)?;
        if img.header.volumes != 1 {
            return Err(nifti_err(
                &f.name,
                format!(
                    "holds {} volumes; one volume per contrast file (or one 4D file holding every contrast)",
                    img.header.volumes
                ),
            ));
        }
        let placement = nifti::placement(&img.header).map_err(|e| nifti_err(&f.name, e.0))?;
        let data = placement.orient(img.volumes.into_iter().next().expect("one volume"));
        if r.channel == manifest.reference_channel {
            reference = Some((img.header.clone(), placement.clone()));
        }
        channels.push(ChannelInput {
            channel: r.name.clone(),
            file: f.name.clone(),
            grid: placement.grid,
            data,
        });
    }
    let (reference, placement) = reference.expect("the reference is an input");
    check_same_placement_same_dims(&channels)?;
    Ok(Inputs {
        channels,
        reference,
        placement,
        four_d: false,
        ignored,
    })
}

/// Two files with the same origin and axes but different dimensions: one of them was cropped or
/// padded without its affine being updated, so they cannot be aligned by their affines.
fn check_same_placement_same_dims(channels: &[ChannelInput]) -> Result<(), SegmentError> {
    for (n, a) in channels.iter().enumerate() {
        for b in &channels[n + 1..] {
            let (ga, gb) = (&a.grid, &b.grid);
            let dims_a = (ga.slices, ga.rows, ga.cols);
            let dims_b = (gb.slices, gb.rows, gb.cols);
            let mut same = gb.clone();
            (same.slices, same.rows, same.cols) = dims_a;
            if dims_a != dims_b && ga.same_as(&same, 1e-3) {
                return Err(nifti_err(
                    &b.file,
                    format!(
                        "has the same affine as {:?} but dimensions {}x{}x{} instead of {}x{}x{}: \
                         one of them was cropped or padded without updating its affine",
                        staging::escape(&a.file),
                        dims_b.2,
                        dims_b.1,
                        dims_b.0,
                        dims_a.2,
                        dims_a.1,
                        dims_a.0
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn read_4d(manifest: &Manifest, f: &CaseFile) -> Result<Inputs, SegmentError> {
    let order = match &manifest.file.nifti {
        Some(n) => &n.channels_4d,
        None => {
            return Err(nifti_err(
                &f.name,
                format!(
                    "matches no input's file name and the model {} states no 4D channel order ([nifti] channels_4d)",
                    manifest.name()
                ),
            ))
        }
    };
    let img = read_file(f)?;
    if img.header.volumes != order.len() {
        return Err(nifti_err(
            &f.name,
            format!(
                "is taken as one 4D file (its name matches no single contrast) but holds {} volume(s); \
                 the model needs {} in the order {}",
                img.header.volumes,
                order.len(),
                order.join(", ")
            ),
        ));
    }
    let placement = nifti::placement(&img.header).map_err(|e| nifti_err(&f.name, e.0))?;
    let mut by_name: Vec<(String, Array3<f32>)> = order.iter().cloned().zip(img.volumes).collect();
    let channels = manifest
        .rules
        .iter()
        .map(|r| {
            let at = by_name
                .iter()
                .position(|(n, _)| n == &r.name)
                .expect("channels_4d names every input (validated)");
            let (_, data) = by_name.swap_remove(at);
            ChannelInput {
                channel: r.name.clone(),
                file: f.name.clone(),
                grid: placement.grid.clone(),
                data: placement.orient(data),
            }
        })
        .collect();
    Ok(Inputs {
        channels,
        reference: img.header,
        placement,
        four_d: true,
        ignored: Vec::new(),
    })
}

/// The result of one NIfTI case.
#[derive(Debug)]
pub struct NiftiOutcome {
    pub case: String,
    /// `<case>_seg.nii.gz`: the labels (output values) on the reference file's grid.
    pub seg_name: String,
    pub seg_nii_gz: Vec<u8>,
    /// `volumes.json`, serialised.
    pub volumes_json: Vec<u8>,
    /// Labels (manifest values) on the reference file's grid, in its voxel order `[k][j][i]`.
    pub labels: Array3<u8>,
    /// (input name, file name) in channel order.
    pub chosen: Vec<(String, String)>,
    pub ignored: Vec<String>,
    pub segments: Vec<Measured>,
    pub regions: Vec<Measured>,
    pub brain_ml: Option<f64>,
    pub timings: StageTimings,
}

/// Reads, segments and encodes one case. `values` maps manifest labels to output voxel values
/// ([`output_values`]).
pub fn segment_case(
    model: &Model,
    case: &str,
    files: &[CaseFile],
    values: &[u8; 256],
) -> Result<NiftiOutcome, SegmentError> {
    check_case_name(case).map_err(SegmentError::BadJob)?;
    let manifest = model.manifest();
    let mut t = StageTimings::default();
    let started = Instant::now();
    let inputs = read_inputs(manifest, files)?;
    t.decode = started.elapsed();

    let started = Instant::now();
    let grid = inputs.placement.grid.clone();
    let outside = manifest.file.geometry.outside_value;
    let chosen: Vec<(String, String)> = inputs
        .channels
        .iter()
        .map(|c| (c.channel.clone(), c.file.clone()))
        .collect();
    let reference_file = chosen[manifest.reference_channel].1.clone();
    let on_ref: Vec<Array3<f32>> = inputs
        .channels
        .into_iter()
        .map(|c| resample_trilinear(c.data.view(), &c.grid, &grid, outside))
        .collect();
    t.preprocess = started.elapsed();

    let labelled = label_on_reference(model, on_ref, &grid, &reference_file, &mut t)?;

    let started = Instant::now();
    let labels = inputs.placement.orient(labelled.labels);
    let written = labels.mapv(|l| values[l as usize]);
    let seg_nii_gz =
        nifti::write_labels_gz(&inputs.reference, &written).map_err(|e| SegmentError::Io {
            what: "writing the NIfTI label map",
            source: std::io::Error::other(e.0),
        })?;
    t.encode = started.elapsed();
    let brain_ml = labelled.brain_mask.as_ref().map(|b| b.ml);
    let doc = volumes_json(
        manifest,
        &Source::Nifti {
            case,
            channels: &chosen,
            four_d: inputs.four_d,
        },
        &labelled.segments,
        &labelled.regions,
        grid.voxel_ml(),
        brain_ml,
        Some(values),
        &t,
        &[],
    );
    let volumes_json = serde_json::to_vec_pretty(&doc).expect("JSON values serialise");
    Ok(NiftiOutcome {
        case: case.to_string(),
        seg_name: format!("{case}_seg.nii.gz"),
        seg_nii_gz,
        volumes_json,
        labels,
        chosen,
        ignored: inputs.ignored,
        segments: labelled.segments,
        regions: labelled.regions,
        brain_ml,
        timings: t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nifti_names_and_case_names() {
        assert!(is_nifti_name("a/BraTS-GLI-00001-000-t2f.nii.gz"));
        assert!(is_nifti_name("X_T1.NII"));
        assert!(!is_nifti_name("x.nii.gz/readme.txt"));
        assert!(!is_nifti_name("IM_0001.dcm"));
        assert!(check_case_name("BraTS2021_00000").is_ok());
        assert!(check_case_name("BraTS-GLI-00001-000").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_case_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn brats_file_names_match_one_input_each() {
        let m = Manifest::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-unet2d"),
        )
        .unwrap();
        let input_of = |name: &str| -> Vec<&str> {
            m.rules
                .iter()
                .filter(|r| r.file_names.iter().any(|p| p.is_match(name)))
                .map(|r| r.name.as_str())
                .collect()
        };
        for (case, names) in [
            (
                "BraTS2021_00000",
                ["_t1.nii.gz", "_t1ce.nii.gz", "_t2.nii.gz", "_flair.nii.gz"],
            ),
            (
                "BraTS-GLI-00001-000",
                ["-t1n.nii.gz", "-t1c.nii.gz", "-t2w.nii.gz", "-t2f.nii.gz"],
            ),
        ] {
            for (suffix, want) in names.iter().zip(["T1", "T1CE", "T2", "FLAIR"]) {
                assert_eq!(input_of(&format!("{case}{suffix}")), vec![want], "{suffix}");
            }
            assert!(input_of(&format!("{case}_seg.nii.gz")).is_empty());
        }
        assert_eq!(output_values(&m, Some(&[1, 2, 4])).unwrap()[3], 4);
        assert_eq!(output_values(&m, None).unwrap()[3], 3);
        assert!(output_values(&m, Some(&[1, 2])).is_err());
        assert!(output_values(&m, Some(&[1, 1, 4])).is_err());
        assert!(output_values(&m, Some(&[0, 2, 4])).is_err());
    }
}
