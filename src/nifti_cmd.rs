//! `segnode segment DIR -o OUT` for a NIfTI case: DIR holds BraTS-named .nii/.nii.gz files (or one
//! 4D file); OUT gets `<case>_seg.nii.gz` and `volumes.json`, the case being DIR's name.

use std::path::Path;

use anyhow::{bail, Context, Result};
use segmenter::nifti_case::{is_nifti_name, output_values, segment_case, CaseFile};
use segmenter::Model;

use crate::segment_cmd::SegmentArgs;

/// The files directly in `dir` (hidden files left out), sorted by name.
fn case_files(dir: &Path) -> Result<Vec<CaseFile>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_file() && !name.starts_with('.') {
            out.push(CaseFile { name, path: p });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A folder is a NIfTI case when a file directly in it is named .nii or .nii.gz.
pub fn is_nifti_case(dir: &Path) -> Result<bool> {
    Ok(dir.is_dir() && case_files(dir)?.iter().any(|f| is_nifti_name(&f.name)))
}

pub fn run(args: &SegmentArgs, model: &Model) -> Result<()> {
    let dir = &args.study;
    let case = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .context("the case folder has no name")?;
    let values = output_values(
        model.manifest(),
        (!args.nifti_labels.is_empty()).then_some(args.nifti_labels.as_slice()),
    )
    .map_err(anyhow::Error::msg)?;
    let files = case_files(dir)?;
    let out = segment_case(model, &case, &files, &values)?;
    if args.output.exists() && !args.output.is_dir() {
        bail!(
            "{} is a file; for a NIfTI case -o names the output folder",
            args.output.display()
        );
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    println!("case {case}");
    for (channel, file) in &out.chosen {
        println!("  {channel:<6} <- {file}");
    }
    for f in &out.ignored {
        println!("  ignored   {f}");
    }
    crate::segment_cmd::print_timings(&out.timings, "read");
    crate::segment_cmd::print_volumes(&out.segments, &out.regions, out.brain_ml);
    // The label map first, volumes.json last: its presence says the result is complete.
    for (name, bytes) in [
        (out.seg_name.as_str(), &out.seg_nii_gz),
        ("volumes.json", &out.volumes_json),
    ] {
        let path = args.output.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if args.json {
        let v: serde_json::Value = serde_json::from_slice(&out.volumes_json)?;
        println!("{v}");
    }
    Ok(())
}
