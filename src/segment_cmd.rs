//! `segnode segment DIR -o seg.dcm`: one study from a folder, offline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use segmenter::folder::{offline_seed, read_study_folder};
use segmenter::{segment_study, Outcome, SegSettings};

use crate::config::FileConfig;
use crate::workers::load_model;

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// Folder holding the study's DICOM files (searched recursively; other files are skipped),
    /// or a NIfTI case: BraTS-named .nii/.nii.gz files, or one 4D file.
    pub study: PathBuf,
    /// Where to write the DICOM-SEG; for a NIfTI case, the folder that gets
    /// <case>_seg.nii.gz and volumes.json.
    #[arg(short, long)]
    pub output: PathBuf,
    /// NIfTI case: voxel values of the label map, one per model segment (e.g. 1,2,4 for
    /// BraTS 2018-2021; default: the model's labels).
    #[arg(long, value_delimiter = ',')]
    pub nifti_labels: Vec<u8>,
    /// Model folder (holding model.toml); default: the bundled brats-synth-unet2d.
    #[arg(long, env = "SEGNODE_MODEL")]
    pub model: Option<PathBuf>,
    /// Threads for inference: this many slices run at once (default: the cores available).
    #[arg(long)]
    pub inference_threads: Option<usize>,
    /// Also print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The stage timings on one line; `first` names the decode stage ("decode", or "read" for NIfTI).
pub fn print_timings(t: &segmenter::StageTimings, first: &str) {
    println!(
        "timings: {first} {:.2} s, brain extraction {:.2} s, preprocess {:.2} s, inference {:.2} s, postprocess {:.2} s, encode {:.2} s",
        t.decode.as_secs_f64(),
        t.brain_extraction.as_secs_f64(),
        t.preprocess.as_secs_f64(),
        t.inference.as_secs_f64(),
        t.postprocess.as_secs_f64(),
        t.encode.as_secs_f64()
    );
}

/// The measured volumes, one line each (DICOM and NIfTI cases).
pub fn print_volumes(
    segments: &[segmenter::pipeline::Measured],
    regions: &[segmenter::pipeline::Measured],
    brain_ml: Option<f64>,
) {
    for s in segments {
        println!(
            "  segment {:<18} {:>8.2} mL ({} voxels)",
            s.name, s.ml, s.voxels
        );
    }
    for r in regions {
        println!("  region  {:<18} {:>8.2} mL", r.name, r.ml);
    }
    if let Some(ml) = brain_ml {
        println!("  brain   {:<18} {:>8.2} mL", "(brain extraction)", ml);
    }
}

pub fn print_outcome(out: &Outcome) {
    println!("study {}", out.study_uid);
    for c in &out.chosen {
        println!(
            "  {:<6} <- series {} [{:?}]",
            c.channel, c.summary, c.matched_by
        );
    }
    print_timings(&out.timings, "decode");
    print_volumes(&out.segments, &out.regions, out.brain_ml);
    println!(
        "SEG {} ({} frames, {} bytes, {} small components removed)",
        out.seg_sop_instance_uid,
        out.seg_frames,
        out.seg.len(),
        out.components_removed
    );
}

pub fn run(args: SegmentArgs, file: &mut FileConfig) -> Result<()> {
    if args.model.is_some() {
        file.worker.model = args.model.clone();
    }
    if let Some(t) = args.inference_threads {
        file.worker.inference_threads = t;
    }
    let model = load_model(file)?;
    if crate::nifti_cmd::is_nifti_case(&args.study)? {
        return crate::nifti_cmd::run(&args, &model);
    }
    let (instances, skipped) = read_study_folder(&args.study)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} files that are not DICOM Part-10");
    }
    let seed = offline_seed(
        &instances,
        &format!("{} {}", model.manifest().name(), model.manifest().version()),
    );
    let out = segment_study(
        &model,
        instances,
        &seed,
        &SegSettings::segnode(env!("CARGO_PKG_VERSION")),
    )?;
    std::fs::write(&args.output, &out.seg)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    print_outcome(&out);
    println!("wrote {}", args.output.display());
    if args.json {
        let j = serde_json::json!({
            "study_uid": out.study_uid,
            "seg_sop_instance_uid": out.seg_sop_instance_uid,
            "seg_frames": out.seg_frames,
            "chosen": out.chosen.iter().map(|c| serde_json::json!({"channel": c.channel, "series_uid": c.series_uid})).collect::<Vec<_>>(),
            "segments": out.segments.iter().map(|s| serde_json::json!({"name": s.name, "ml": s.ml, "voxels": s.voxels})).collect::<Vec<_>>(),
            "brain_ml": out.brain_ml,
            "timings_s": out.timings.stages().iter().map(|(n, d)| (n.to_string(), serde_json::json!(d.as_secs_f64()))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{j}");
    }
    Ok(())
}
