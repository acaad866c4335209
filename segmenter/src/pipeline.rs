//! One study in, one DICOM-SEG out: selection -> volumes -> preprocessing -> inference ->
//! postprocessing -> SEG. No I/O: the caller brings the instances and takes the bytes.

use std::time::{Duration, Instant};

use dicom_object::DefaultDicomObject;
use dicom_seg::{
    AlgorithmIdentification, CodedConcept, ContentIdentification, Equipment, Masks,
    ReportAlgorithm, SegmentDescription, SegmentNumber, SegmentationBuilder, Uid,
    VolumeMeasurement, VolumeReportBuilder,
};
use ndarray::{Array3, Axis};

use crate::brain;
use crate::error::SegmentError;
use crate::manifest::{Code, Manifest};
use crate::model::Model;
use crate::postprocess::{label_counts, remove_small_components};
use crate::preprocess::{
    normalise_zscore_above_mean, resample_trilinear, stack_channels, ModelGrid,
};
use crate::select::{select, MatchedBy};
use crate::study::Study;
use crate::volume::{Grid, Volume};

/// Wall time of each stage of one study.
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    /// Parsing, grouping, selection, pixel decoding and stacking.
    pub decode: Duration,
    /// Resampling onto the reference and model grids, normalisation.
    pub preprocess: Duration,
    /// The brain-extraction stage (its own resampling, normalisation and inference, the checks and
    /// the stripping); zero without `[brain_extraction]`.
    pub brain_extraction: Duration,
    pub inference: Duration,
    /// Back to the reference grid, argmax, clean-up.
    pub postprocess: Duration,
    /// Building and encoding the DICOM-SEG.
    pub encode: Duration,
}

impl StageTimings {
    pub fn stages(&self) -> [(&'static str, Duration); 6] {
        [
            ("decode", self.decode),
            ("brain_extraction", self.brain_extraction),
            ("preprocess", self.preprocess),
            ("inference", self.inference),
            ("postprocess", self.postprocess),
            ("encode", self.encode),
        ]
    }
}

/// The channel each series went to.
#[derive(Debug, Clone)]
pub struct ChosenSeries {
    pub channel: String,
    pub series_uid: String,
    pub summary: String,
    pub matched_by: MatchedBy,
}

/// A measured segment or region.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub labels: Vec<u8>,
    pub voxels: usize,
    pub ml: f64,
}

/// The result of one study.
#[derive(Debug)]
pub struct Outcome {
    pub study_uid: String,
    pub seg_sop_instance_uid: String,
    pub seg_series_instance_uid: String,
    /// Part-10 bytes of the SEG.
    pub seg: Vec<u8>,
    /// Part-10 bytes of the volume report (TID 1500 SR) about the SEG, unless turned off.
    pub sr: Option<Vec<u8>>,
    pub seg_frames: usize,
    pub chosen: Vec<ChosenSeries>,
    /// Labels on the reference grid, slices ascending along the normal.
    pub labels: Array3<u8>,
    /// The reference series' pixels (same indexing), for pictures.
    pub reference: Array3<f32>,
    /// SOP Instance UID (and frame number for multi-frame sources) of each slice of `labels`.
    pub slice_sources: Vec<(String, Option<u32>)>,
    pub grid: Grid,
    pub segments: Vec<Measured>,
    pub regions: Vec<Measured>,
    pub components_removed: usize,
    /// Volume of the brain mask in mL, when the model has a brain-extraction stage.
    pub brain_ml: Option<f64>,
    /// The brain mask (1 = brain) on the reference grid, indexed like `labels`, with that stage.
    pub brain_mask: Option<Array3<u8>>,
    pub timings: StageTimings,
}

/// What goes into the SEG besides the masks.
#[derive(Debug, Clone)]
pub struct SegSettings {
    pub equipment: Equipment,
    /// Series Number of the SEG; default 1000 + the reference series' number (or 1000).
    pub series_number: Option<i32>,
    /// Also write the volumes as a DICOM SR (TID 1500) referencing the SEG's segments.
    pub volume_report: bool,
}

impl SegSettings {
    pub fn segnode(version: &str) -> Self {
        SegSettings {
            equipment: Equipment {
                manufacturer: "segnode".into(),
                model_name: "segnode".into(),
                device_serial_number: "0".into(),
                software_versions: version.into(),
            },
            series_number: None,
            volume_report: true,
        }
    }
}

fn code(c: &Code) -> CodedConcept {
    // CodedConcept::new takes (value, scheme, meaning).
    CodedConcept::new(c.value.clone(), c.scheme.clone(), c.meaning.clone())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The TID 1500 report of the volumes: one group per segment (its own segment number), then one per
/// region of the manifest (the segments whose labels make it up), in the SEG's series number + 1.
fn volume_report(
    manifest: &Manifest,
    seg: &dicom_seg::Segmentation,
    settings: &SegSettings,
    segments: &[Measured],
    regions: &[Measured],
) -> Result<Vec<u8>, SegmentError> {
    let a = &manifest.file.algorithm;
    let series_number = seg
        .dataset()
        .get(dicom_dictionary_std::tags::SERIES_NUMBER)
        .and_then(|e| e.to_int::<i32>().ok())
        .unwrap_or(1000);
    let mut b = VolumeReportBuilder::new(
        seg.dataset(),
        settings.equipment.clone(),
        ReportAlgorithm {
            name: a.name.clone(),
            version: a.version.clone(),
        },
    )
    .series(
        series_number.saturating_add(1),
        Some(truncate(
            &format!(
                "Tumour volumes ({} {})",
                manifest.name(),
                manifest.version()
            ),
            64,
        )),
    );
    for (n, (s, m)) in manifest.file.segments.iter().zip(segments).enumerate() {
        b = b.volume(VolumeMeasurement {
            tracking_identifier: truncate(&s.name, 64),
            finding: code(&s.type_),
            segments: vec![n as u16 + 1],
            ml: m.ml,
        });
    }
    for r in regions {
        let numbers: Vec<u16> = manifest
            .file
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| r.labels.contains(&s.label))
            .map(|(n, _)| n as u16 + 1)
            .collect();
        b = b.volume(VolumeMeasurement {
            tracking_identifier: truncate(&r.name, 64),
            // SCT 108369006 Neoplasm: a BraTS region is a part of the tumour, not one tissue.
            finding: CodedConcept::sct("108369006", "Neoplasm"),
            segments: numbers,
            ml: r.ml,
        });
    }
    Ok(b.build()?.to_bytes()?)
}

/// Labels on the reference grid and what was measured on them.
#[derive(Debug)]
pub struct Labelled {
    pub labels: Array3<u8>,
    pub segments: Vec<Measured>,
    pub regions: Vec<Measured>,
    pub components_removed: usize,
    pub brain_mask: Option<brain::BrainMask>,
}

/// The model's part of a study, shared by the DICOM and NIfTI paths: every channel already on the
/// reference `grid` (raw values, channel order) -> brain extraction (when the manifest has it) ->
/// the model's own grid, normalisation and inference -> labels back on `grid`, clean-up and the
/// volumes of segments and regions. `reference_name` names the reference input in errors.
pub fn label_on_reference(
    model: &Model,
    mut on_ref: Vec<Array3<f32>>,
    grid: &Grid,
    reference_name: &str,
    t: &mut StageTimings,
) -> Result<Labelled, SegmentError> {
    let manifest: &Manifest = model.manifest();
    let g = &manifest.file.geometry;
    let model_grid = ModelGrid {
        size: g.size,
        spacing: g.spacing_mm,
    };
    // Brain extraction on the reference grid, before the model's own resampling and normalisation.
    let started = Instant::now();
    let brain_mask = match (&manifest.brain, model.brain()) {
        (Some(stage), Some(brain_model)) => {
            let b = brain::extract(brain_model, stage, &on_ref, grid)?;
            tracing::info!(
                brain_ml = format!("{:.0}", b.ml),
                edge_fraction = format!("{:.3}", b.edge_fraction),
                model = %brain_model.manifest().name(),
                "brain extracted"
            );
            brain::check(stage, &b)?;
            for x in &mut on_ref {
                brain::strip(x, &b.mask, stage.settings.outside_value);
            }
            Some(b)
        }
        _ => None,
    };
    t.brain_extraction = started.elapsed();

    let mut labels = if manifest.is_patch3d() {
        let (labels, pt) =
            crate::patch3d::segment_on_reference(model, &on_ref, grid, reference_name)?;
        drop(on_ref);
        t.preprocess += pt.preprocess;
        t.inference = pt.inference;
        t.postprocess = pt.postprocess;
        labels
    } else {
        let started = Instant::now();
        let channels: Vec<Array3<f32>> = on_ref
            .into_iter()
            .map(|r| {
                let mut x = model_grid.from_reference(r.view(), grid, g.outside_value);
                normalise_zscore_above_mean(&mut x, manifest.file.normalisation.std_floor);
                x
            })
            .collect();
        let input = stack_channels(&channels);
        drop(channels);
        t.preprocess += started.elapsed();

        let started = Instant::now();
        let logits = model.run(input.view())?;
        t.inference = started.elapsed();

        let started = Instant::now();
        let labels = model_grid.labels_on_reference(logits.view(), grid, manifest.classes());
        t.postprocess = started.elapsed();
        labels
    };
    let started = Instant::now();
    if let Some(b) = &brain_mask {
        brain::clear_outside(&mut labels, &b.mask);
    }
    let min_voxels = (manifest.file.postprocess.min_component_ml / grid.voxel_ml()).ceil() as usize;
    let components_removed = remove_small_components(&mut labels, min_voxels);
    let counts = label_counts(&labels);
    let measure = |name: &str, ls: &[u8]| {
        let voxels: usize = ls.iter().map(|&l| counts[l as usize]).sum();
        Measured {
            name: name.to_string(),
            labels: ls.to_vec(),
            voxels,
            ml: voxels as f64 * grid.voxel_ml(),
        }
    };
    let segments: Vec<Measured> = manifest
        .file
        .segments
        .iter()
        .map(|s| measure(&s.name, &[s.label]))
        .collect();
    let regions: Vec<Measured> = manifest
        .file
        .regions
        .iter()
        .map(|r| measure(&r.name, &r.labels))
        .collect();
    t.postprocess += started.elapsed();

    Ok(Labelled {
        labels,
        segments,
        regions,
        components_removed,
        brain_mask,
    })
}

/// Segments a study with `model`. `seg_uid_seed` fixes the SEG's SOP Instance UID (the job id: a
/// redelivered job gives the same UID).
pub fn segment_study(
    model: &Model,
    instances: Vec<DefaultDicomObject>,
    seg_uid_seed: &str,
    settings: &SegSettings,
) -> Result<Outcome, SegmentError> {
    let manifest: &Manifest = model.manifest();
    let mut t = StageTimings::default();

    let started = Instant::now();
    let study = Study::from_instances(instances)?;
    let selection = select(manifest, &study)?;
    let chosen: Vec<ChosenSeries> = manifest
        .rules
        .iter()
        .zip(&selection.series)
        .zip(&selection.matched_by)
        .map(|((rule, &s), by)| ChosenSeries {
            channel: rule.name.clone(),
            series_uid: study.series[s].uid.clone(),
            summary: study.series[s].summary(),
            matched_by: by.clone(),
        })
        .collect();
    let volumes: Vec<Volume> = selection
        .series
        .iter()
        .map(|&s| Volume::from_series(&study.series[s]))
        .collect::<Result<_, _>>()?;
    t.decode = started.elapsed();

    let started = Instant::now();
    let reference = &volumes[manifest.reference_channel];
    let g = &manifest.file.geometry;
    let grid = reference.grid.clone();
    for (v, c) in volumes.iter().zip(&chosen) {
        if v.source.frame_of_reference_uid() != reference.source.frame_of_reference_uid() {
            return Err(SegmentError::Geometry {
                series_uid: c.series_uid.clone(),
                message: format!(
                    "Frame of Reference {} differs from the {} series' {}: the series cannot be \
                     aligned by patient coordinates",
                    v.source.frame_of_reference_uid(),
                    g.reference_input,
                    reference.source.frame_of_reference_uid()
                ),
            });
        }
    }
    let on_ref: Vec<Array3<f32>> = volumes
        .iter()
        .map(|v| resample_trilinear(v.data.view(), &v.grid, &grid, g.outside_value))
        .collect();
    t.preprocess = started.elapsed();

    let reference_uid = chosen[manifest.reference_channel].series_uid.clone();
    let Labelled {
        labels,
        segments,
        regions,
        components_removed,
        brain_mask,
    } = label_on_reference(model, on_ref, &grid, &reference_uid, &mut t)?;

    let started = Instant::now();
    // Masks are indexed like the source's frames; label value -> segment number (manifest order).
    let mut segment_of_label = [0u16; 256];
    for (n, s) in manifest.file.segments.iter().enumerate() {
        segment_of_label[s.label as usize] = n as u16 + 1;
    }
    let mut masks = Array3::<u16>::zeros((grid.slices, grid.rows, grid.cols));
    for (k, &frame) in reference.frame_of_slice.iter().enumerate() {
        masks.index_axis_mut(Axis(0), frame).assign(
            &labels
                .index_axis(Axis(0), k)
                .mapv(|l| segment_of_label[l as usize]),
        );
    }
    let a = &manifest.file.algorithm;
    let algorithm = AlgorithmIdentification {
        family: code(&a.family),
        name: truncate(&a.name, 64),
        version: truncate(&a.version, 64),
        parameters: None,
        source: Some("segnode".into()),
    };
    let reference_series = &study.series[selection.series[manifest.reference_channel]];
    let mut builder = SegmentationBuilder::new(
        &reference.source,
        settings.equipment.clone(),
        ContentIdentification::new(
            "TUMOUR_SEG",
            Some(truncate(&manifest.file.model.description, 64)),
            Some("segnode".into()),
        )?,
    )
    .series(
        settings
            .series_number
            .unwrap_or(1000 + reference_series.number.unwrap_or(0) as i32),
        Some(truncate(
            &format!("Tumour SEG ({} {})", manifest.name(), manifest.version()),
            64,
        )),
    )
    .sop_instance_uid(Uid::derived_from(seg_uid_seed));
    for (n, s) in manifest.file.segments.iter().enumerate() {
        let [r, gg, b] = s.colour_rgb;
        builder = builder.segment(
            SegmentDescription::automatic(
                SegmentNumber::new(n as u16 + 1).expect("n + 1 > 0"),
                truncate(&s.name, 64),
                code(&s.category),
                code(&s.type_),
                algorithm.clone(),
            )
            .with_description(s.description.clone())
            .with_srgb(r, gg, b),
        );
    }
    let seg = builder.build(Masks::Labels(masks.view()))?;
    let bytes = seg.to_bytes()?;
    let sr = if settings.volume_report {
        Some(volume_report(
            manifest, &seg, settings, &segments, &regions,
        )?)
    } else {
        None
    };
    t.encode = started.elapsed();

    let reference_data = reference.data.clone();
    let slice_sources = reference
        .frame_of_slice
        .iter()
        .map(|&f| {
            let fr = &reference.source.frames()[f];
            (fr.sop_instance_uid.to_string(), fr.frame_number)
        })
        .collect();
    Ok(Outcome {
        study_uid: study.study_uid.clone(),
        seg_sop_instance_uid: seg.sop_instance_uid().to_string(),
        seg_series_instance_uid: seg.series_instance_uid().to_string(),
        seg_frames: seg.number_of_frames(),
        seg: bytes,
        sr,
        chosen,
        labels,
        reference: reference_data,
        slice_sources,
        grid,
        segments,
        regions,
        components_removed,
        brain_ml: brain_mask.as_ref().map(|b| b.ml),
        brain_mask: brain_mask.map(|b| b.mask),
        timings: t,
    })
}
