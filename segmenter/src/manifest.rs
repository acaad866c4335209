//! The model manifest (`models/<name>/model.toml`): everything the segmenter knows about a model.
//! The schema is documented in the shipped manifest's comments; unknown fields are rejected so a typo
//! is an error, not a silent default.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::SegmentError;

/// The only manifest schema this segmenter understands.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub schema_version: u32,
    pub model: ModelInfo,
    pub algorithm: Algorithm,
    pub anatomic_region: Option<Code>,
    pub selection: Selection,
    pub inputs: Vec<Input>,
    pub geometry: Geometry,
    pub normalisation: Normalisation,
    pub output: Output,
    #[serde(default)]
    pub postprocess: Postprocess,
    #[serde(default)]
    pub regions: Vec<Region>,
    pub segments: Vec<Segment>,
    /// Optional: a brain-extraction model run first (see [`BrainExtraction`]).
    pub brain_extraction: Option<BrainExtraction>,
    /// `geometry.kind = "patch3d"` only: the patch grid, blending and mirroring (see
    /// [`crate::patch3d`]); absent for slice2d.
    pub sliding_window: Option<SlidingWindow>,
    /// Optional: how NIfTI uploads map onto the inputs besides each input's `file_names`
    /// (see [`NiftiInputs`]).
    pub nifti: Option<NiftiInputs>,
}

/// `[nifti]`: the channel order of a single 4D NIfTI file (one volume per input, in this order).
/// Without it a 4D upload is refused: the order of a 4D file is not in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NiftiInputs {
    /// Input names, one per volume of the 4th dimension, e.g. `["FLAIR", "T1", "T1CE", "T2"]`
    /// (the Medical Segmentation Decathlon's BrainTumour order).
    pub channels_4d: Vec<String>,
}

/// `[brain_extraction]`: a brain-mask model (itself a slice2d manifest whose output classes are
/// `[0, 1]`, 1 = brain) run on the reference grid before this model. Voxels outside the mask get
/// `outside_value` (in every channel, before normalisation), and no label is kept outside the mask.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrainExtraction {
    /// Folder (or model.toml) of the brain-mask model, relative to the folder of this manifest.
    pub model: String,
    /// Names of this model's inputs fed to the brain model's input channels, in its channel order.
    pub channels: Vec<String>,
    /// Raw value given to every voxel outside the brain mask, before normalisation.
    pub outside_value: f32,
    /// Plausible brain volume [min, max] in mL; outside it the job fails permanently.
    pub brain_ml: [f64; 2],
    /// Largest plausible fraction of the mask's surface (area) lying on the volume's boundary faces;
    /// above it (a mask that fills the field of view) the job fails permanently.
    pub max_edge_fraction: f64,
}

/// The brain-extraction stage of a manifest, resolved: the brain model's own manifest and the
/// indices (into this manifest's channels) of the channels it reads.
#[derive(Debug, Clone)]
pub struct BrainStage {
    pub manifest: Box<Manifest>,
    pub channels: Vec<usize>,
    pub settings: BrainExtraction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub onnx: String,
    pub onnx_sha256: String,
    pub input_name: String,
    pub output_name: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub intended_use: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Algorithm {
    pub name: String,
    pub version: String,
    pub family: Code,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub scheme: String,
    pub value: String,
    pub meaning: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    pub match_order: Vec<String>,
    pub min_slices: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub channel: usize,
    pub name: String,
    pub series_description: Vec<String>,
    pub exclude: Vec<String>,
    #[serde(default)]
    pub fallback: Fallback,
    /// Optional: regexes matched against the base name of each file of a NIfTI upload; the one
    /// file that matches is this input (e.g. `'(?i)[_-](flair|t2f)\.nii(\.gz)?$'`).
    #[serde(default)]
    pub file_names: Vec<String>,
}

/// Attribute conditions tried when no Series Description matches; every condition stated must hold.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    pub echo_time_ms: Option<[f64; 2]>,
    pub repetition_time_ms: Option<[f64; 2]>,
    pub inversion_time_ms: Option<[f64; 2]>,
    pub no_inversion: Option<bool>,
    pub contrast_agent: Option<bool>,
}

impl Fallback {
    pub fn is_empty(&self) -> bool {
        *self == Fallback::default()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    pub kind: String,
    pub reference_input: String,
    /// slice2d only (required there; absent for patch3d, which uses `target_spacing_mm`).
    #[serde(default)]
    pub spacing_mm: [f64; 2],
    /// slice2d only (required there; absent for patch3d, which uses `sliding_window.patch_size`).
    #[serde(default)]
    pub size: [usize; 2],
    pub inter_series_interpolation: String,
    pub in_plane_interpolation: String,
    pub outside_value: f32,
    /// patch3d only: axis codes of the canonical grid's three array axes, nibabel style ("RAS": the
    /// first axis points to the patient's Right, the second Anterior, the third Superior).
    pub orientation: Option<String>,
    /// patch3d only: canonical voxel spacing in mm along the three `orientation` axes.
    pub target_spacing_mm: Option<[f64; 3]>,
    /// patch3d only, optional (default false): crop the canonical grid to the bounding box of the
    /// voxels that are non-zero in any channel before normalisation (nnU-Net's crop_to_nonzero).
    pub crop_nonzero: Option<bool>,
    /// slice2d only, optional: test-time mirroring of every slice over each non-empty combination
    /// of these in-plane axes (0: rows, 1: columns), the logits averaged with the unmirrored
    /// run's (nnU-Net's rule, as patch3d's `sliding_window.mirror_axes`). Empty or absent: none.
    #[serde(default)]
    pub mirror_axes: Vec<usize>,
}

/// `[sliding_window]` (patch3d): how the fixed-shape network tiles the canonical volume.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlidingWindow {
    /// Network patch [P0, P1, P2] along the canonical axes; equals input_shape[2..5].
    pub patch_size: [usize; 3],
    /// Window positions: "monai" (MONAI sliding_window_inference, with `overlap`) or "nnunet"
    /// (nnU-Net v2 compute_steps_for_sliding_window, with `step`).
    pub positions: String,
    /// "monai": overlap in [0, 1) between neighbouring windows.
    pub overlap: Option<f64>,
    /// "nnunet": tile_step_size in (0, 1], a fraction of the patch.
    pub step: Option<f64>,
    /// "constant" or "gaussian" (the Gaussian of `positions`' convention).
    pub blending: String,
    /// "gaussian": sigma = sigma_scale x patch size, per axis.
    pub sigma_scale: Option<f64>,
    /// Test-time mirroring over every non-empty combination of these canonical axes (0, 1, 2),
    /// nnU-Net's rule; empty or absent: none.
    #[serde(default)]
    pub mirror_axes: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub method: String,
    pub scope: String,
    pub std_floor: f64,
    /// `percentile_clip` only: [lower, upper] percentiles in [0, 100].
    pub percentiles: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub kind: String,
    pub activation: String,
    /// `logits`: label value of each output channel (first 0). Absent for `sigmoid_regions`.
    #[serde(default)]
    pub classes: Vec<u8>,
    pub resample_back: String,
    /// `sigmoid_regions`: region channels painted in this order (a later one overwrites).
    #[serde(default)]
    pub paint: Vec<Paint>,
}

/// One region channel of a `sigmoid_regions` output: every voxel whose probability of `channel` is
/// >= `threshold` gets `label` (painted in list order).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Paint {
    pub channel: usize,
    pub label: u8,
    pub threshold: f32,
}

/// Clean-up after the argmax. Optional section; absent means no clean-up.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Postprocess {
    /// Connected components (26-connected) of the union of all labels smaller than this many mL are removed.
    #[serde(default)]
    pub min_component_ml: f64,
}

/// A named union of labels (e.g. BraTS WT/TC/ET), reported with volumes and, in the demo, Dice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    pub labels: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub label: u8,
    pub name: String,
    pub description: String,
    pub category: Code,
    #[serde(rename = "type")]
    pub type_: Code,
    pub colour_rgb: [u8; 3],
}

/// An input channel's Series Description rules, compiled.
#[derive(Debug, Clone)]
pub struct ChannelRule {
    pub channel: usize,
    pub name: String,
    pub include: Vec<Regex>,
    pub exclude: Vec<Regex>,
    pub fallback: Fallback,
    /// NIfTI file-name patterns (empty: this input cannot come from a NIfTI upload).
    pub file_names: Vec<Regex>,
}

/// A manifest that was read, validated and whose ONNX file was found with the stated checksum.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: ManifestFile,
    /// Folder holding model.toml (the ONNX path is relative to it).
    pub dir: PathBuf,
    pub onnx_path: PathBuf,
    /// Rules in channel order.
    pub rules: Vec<ChannelRule>,
    /// Index into `rules` of the reference input.
    pub reference_channel: usize,
    /// The brain-extraction stage, when the manifest has `[brain_extraction]`.
    pub brain: Option<BrainStage>,
}

fn invalid(path: &Path, msg: impl Into<String>) -> SegmentError {
    SegmentError::Manifest {
        path: path.display().to_string(),
        message: msg.into(),
    }
}

impl Manifest {
    /// Reads `model.toml` from `path` (a file, or a folder holding `model.toml`), validates it and
    /// verifies the ONNX file's SHA-256.
    pub fn load(path: &Path) -> Result<Self, SegmentError> {
        Self::load_at(path, true)
    }

    /// `with_brain` false: a brain-extraction model's own manifest, which may not name another one
    /// (no chains, no cycles).
    fn load_at(path: &Path, with_brain: bool) -> Result<Self, SegmentError> {
        let file_path = if path.is_dir() {
            path.join("model.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file_path)
            .map_err(|e| invalid(&file_path, format!("cannot read: {e}")))?;
        let file: ManifestFile =
            toml::from_str(&text).map_err(|e| invalid(&file_path, e.to_string()))?;
        let dir = file_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if !with_brain && file.brain_extraction.is_some() {
            return Err(invalid(
                &file_path,
                "a brain-extraction model may not have a [brain_extraction] of its own",
            ));
        }
        let mut m = Self::from_parts(file, dir, &file_path)?;
        m.verify_onnx()?;
        if let Some(be) = m.file.brain_extraction.clone() {
            let bad = |msg: String| invalid(&file_path, format!("[brain_extraction] {msg}"));
            let brain_path = m.dir.join(&be.model);
            let brain =
                Self::load_at(&brain_path, false).map_err(|e| bad(format!("model: {e}")))?;
            if brain.is_patch3d() {
                return Err(bad(format!(
                    "model {} must be a slice2d model (the brain stage runs slice by slice)",
                    brain_path.display()
                )));
            }
            if brain.classes() != [0, 1] {
                return Err(bad(format!(
                    "model {} must have output.classes [0, 1] (1 = brain), not {:?}",
                    brain_path.display(),
                    brain.classes()
                )));
            }
            if be.channels.len() != brain.channels() {
                return Err(bad(format!(
                    "channels {:?} must name {} input(s), as many as the brain model has",
                    be.channels,
                    brain.channels()
                )));
            }
            let channels =
                be.channels
                    .iter()
                    .map(|c| {
                        m.rules.iter().position(|r| &r.name == c).ok_or_else(|| {
                            bad(format!("channel {c:?} is not an input of this model"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            m.brain = Some(BrainStage {
                manifest: Box::new(brain),
                channels,
                settings: be,
            });
        }
        Ok(m)
    }

    fn from_parts(
        file: ManifestFile,
        dir: PathBuf,
        file_path: &Path,
    ) -> Result<Self, SegmentError> {
        let bad = |m: String| invalid(file_path, m);
        if file.schema_version != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema_version {} is not supported (this segnode reads version {SCHEMA_VERSION})",
                file.schema_version
            )));
        }
        let patch3d = match file.geometry.kind.as_str() {
            "slice2d" => false,
            "patch3d" => true,
            other => {
                return Err(bad(format!(
                    "geometry.kind {other:?} is not supported (supported: \"slice2d\", \"patch3d\")"
                )))
            }
        };
        if !patch3d {
            Self::check_slice2d_only_fields(&file).map_err(&bad)?;
        }
        for (what, value, want) in [
            (
                "normalisation.method",
                &file.normalisation.method,
                "zscore_above_mean",
            ),
            ("normalisation.scope", &file.normalisation.scope, "volume"),
            ("output.kind", &file.output.kind, "logits"),
            (
                "output.resample_back",
                &file.output.resample_back,
                "bilinear_logits_argmax",
            ),
            (
                "geometry.inter_series_interpolation",
                &file.geometry.inter_series_interpolation,
                "trilinear",
            ),
            (
                "geometry.in_plane_interpolation",
                &file.geometry.in_plane_interpolation,
                "bilinear",
            ),
        ] {
            if !patch3d && value != want {
                return Err(bad(format!(
                    "{what} {value:?} is not supported (supported: {want:?})"
                )));
            }
        }
        let n = file.inputs.len();
        if n == 0 {
            return Err(bad("no [[inputs]]".into()));
        }
        let mut rules = Vec::with_capacity(n);
        for (i, inp) in file.inputs.iter().enumerate() {
            if inp.channel != i {
                return Err(bad(format!(
                    "[[inputs]] must be listed in channel order: entry {i} ({}) says channel {}",
                    inp.name, inp.channel
                )));
            }
            let compile = |ps: &[String]| -> Result<Vec<Regex>, SegmentError> {
                ps.iter()
                    .map(|p| {
                        Regex::new(p)
                            .map_err(|e| bad(format!("input {}: regex {p:?}: {e}", inp.name)))
                    })
                    .collect()
            };
            rules.push(ChannelRule {
                channel: i,
                name: inp.name.clone(),
                include: compile(&inp.series_description)?,
                exclude: compile(&inp.exclude)?,
                fallback: inp.fallback.clone(),
                file_names: compile(&inp.file_names)?,
            });
        }
        let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != n {
            return Err(bad("input names must be unique".into()));
        }
        let mut order = file.selection.match_order.clone();
        order.sort_unstable();
        if order != names {
            return Err(bad(format!(
                "selection.match_order {:?} must name every input exactly once ({names:?})",
                file.selection.match_order
            )));
        }
        let reference_channel = rules
            .iter()
            .position(|r| r.name == file.geometry.reference_input)
            .ok_or_else(|| {
                bad(format!(
                    "geometry.reference_input {:?} is not an input",
                    file.geometry.reference_input
                ))
            })?;
        if let Some(nifti) = &file.nifti {
            let mut order = nifti.channels_4d.clone();
            order.sort_unstable();
            if order != names {
                return Err(bad(format!(
                    "nifti.channels_4d {:?} must name every input exactly once ({names:?})",
                    nifti.channels_4d
                )));
            }
        }
        if patch3d {
            crate::patch3d::validate_manifest(&file).map_err(&bad)?;
        } else {
            let [h, w] = file.geometry.size;
            if file.model.input_shape != [1, n, h, w] {
                return Err(bad(format!(
                    "model.input_shape {:?} must be [1, {n}, {h}, {w}] (inputs and geometry.size)",
                    file.model.input_shape
                )));
            }
            let k = file.output.classes.len();
            if file.model.output_shape != [1, k, h, w] {
                return Err(bad(format!(
                    "model.output_shape {:?} must be [1, {k}, {h}, {w}] (output.classes and geometry.size)",
                    file.model.output_shape
                )));
            }
            if !file
                .geometry
                .spacing_mm
                .iter()
                .all(|s| s.is_finite() && *s > 0.0)
            {
                return Err(bad("geometry.spacing_mm must be positive".into()));
            }
            if !crate::patch3d::distinct_axes_below(&file.geometry.mirror_axes, 2) {
                return Err(bad(format!(
                    "geometry.mirror_axes {:?} must be distinct in-plane axes among 0 (rows) and 1 (columns)",
                    file.geometry.mirror_axes
                )));
            }
            if file.output.classes.first() != Some(&0) {
                return Err(bad("output.classes must start with 0 (background)".into()));
            }
            let labels: Vec<u8> = file.output.classes[1..].to_vec();
            let seg_labels: Vec<u8> = file.segments.iter().map(|s| s.label).collect();
            if labels != seg_labels {
                return Err(bad(format!(
                    "[[segments]] labels {seg_labels:?} must list every non-background class in order ({labels:?})"
                )));
            }
            if file.output.activation != "softmax" && file.output.activation != "none" {
                return Err(bad(format!(
                    "output.activation {:?} is not supported (softmax, none)",
                    file.output.activation
                )));
            }
        }
        let labels: Vec<u8> = file.segments.iter().map(|s| s.label).collect();
        for r in &file.regions {
            if r.labels.iter().any(|l| !labels.contains(l)) {
                return Err(bad(format!("region {} names an unknown label", r.name)));
            }
        }
        let min_ml = file.postprocess.min_component_ml;
        if min_ml.is_nan() || min_ml < 0.0 {
            return Err(bad("postprocess.min_component_ml must be >= 0".into()));
        }
        if let Some(be) = &file.brain_extraction {
            let [lo, hi] = be.brain_ml;
            if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi) {
                return Err(bad(format!(
                    "[brain_extraction] brain_ml {:?} must be [min, max] with 0 <= min < max",
                    be.brain_ml
                )));
            }
            if !(be.max_edge_fraction > 0.0 && be.max_edge_fraction <= 1.0) {
                return Err(bad(
                    "[brain_extraction] max_edge_fraction must be in (0, 1]".into(),
                ));
            }
            if !be.outside_value.is_finite() {
                return Err(bad("[brain_extraction] outside_value must be finite".into()));
            }
        }
        let onnx_path = dir.join(&file.model.onnx);
        Ok(Manifest {
            file,
            dir,
            onnx_path,
            rules,
            reference_channel,
            brain: None,
        })
    }

    /// The patch3d-only fields may not appear in a slice2d manifest (they would be ignored).
    fn check_slice2d_only_fields(file: &ManifestFile) -> Result<(), String> {
        let g = &file.geometry;
        let stray = [
            ("geometry.orientation", g.orientation.is_some()),
            ("geometry.target_spacing_mm", g.target_spacing_mm.is_some()),
            ("geometry.crop_nonzero", g.crop_nonzero.is_some()),
            ("[sliding_window]", file.sliding_window.is_some()),
            (
                "normalisation.percentiles",
                file.normalisation.percentiles.is_some(),
            ),
            ("output.paint", !file.output.paint.is_empty()),
        ];
        match stray.iter().find(|(_, present)| *present) {
            Some((what, _)) => Err(format!(
                "{what} is for geometry.kind \"patch3d\"; this manifest is \"slice2d\""
            )),
            None => Ok(()),
        }
    }

    fn verify_onnx(&self) -> Result<(), SegmentError> {
        let bytes = std::fs::read(&self.onnx_path).map_err(|e| SegmentError::Manifest {
            path: self.onnx_path.display().to_string(),
            message: format!("cannot read the model file: {e}"),
        })?;
        let got = hex(&Sha256::digest(&bytes));
        if got != self.file.model.onnx_sha256.to_ascii_lowercase() {
            return Err(SegmentError::Manifest {
                path: self.onnx_path.display().to_string(),
                message: format!(
                    "SHA-256 {got} does not match model.onnx_sha256 {} in the manifest; \
                     the model file is not the one the manifest describes",
                    self.file.model.onnx_sha256
                ),
            });
        }
        Ok(())
    }

    /// `geometry.kind = "patch3d"`.
    pub fn is_patch3d(&self) -> bool {
        self.file.geometry.kind == "patch3d"
    }

    pub fn name(&self) -> &str {
        &self.file.model.name
    }

    pub fn version(&self) -> &str {
        &self.file.model.version
    }

    pub fn channels(&self) -> usize {
        self.rules.len()
    }

    /// Label value of each output channel.
    pub fn classes(&self) -> &[u8] {
        &self.file.output.classes
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-unet2d")
    }

    #[test]
    fn shipped_manifest_loads() {
        let m = Manifest::load(&shipped()).unwrap();
        assert_eq!(m.channels(), 4);
        assert_eq!(m.rules[m.reference_channel].name, "FLAIR");
        assert_eq!(m.classes(), &[0, 1, 2, 3]);
    }

    #[test]
    fn shipped_manifest_has_a_brain_stage() {
        let m = Manifest::load(&shipped()).unwrap();
        let b = m.brain.as_ref().expect("[brain_extraction]");
        assert_eq!(b.manifest.name(), "brain-mask-synth");
        assert_eq!(b.manifest.classes(), &[0, 1]);
        assert_eq!(b.manifest.channels(), 1);
        assert_eq!(b.channels, vec![3], "reads the FLAIR channel");
        assert_eq!(b.settings.brain_ml, [800.0, 3000.0]);
    }

    /// The shipped manifest with `edit` applied, in a temporary folder beside a copy of its ONNX file
    /// (the brain model referenced by absolute path).
    fn load_edited(edit: impl Fn(String) -> String) -> Result<Manifest, SegmentError> {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(shipped().join("model.toml")).unwrap();
        let brain = shipped().join("../brain-mask-synth");
        let text = text.replace(
            "model = \"../brain-mask-synth\"",
            &format!("model = {:?}", brain.display().to_string()),
        );
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed nothing");
        std::fs::write(dir.path().join("model.toml"), edited).unwrap();
        std::fs::copy(
            shipped().join("brats_synth_unet2d.onnx"),
            dir.path().join("brats_synth_unet2d.onnx"),
        )
        .unwrap();
        Manifest::load(dir.path())
    }

    #[test]
    fn brain_stage_errors_are_clear() {
        load_edited(|t| t.replace("\nbrain_ml = ", "\nbrain_mL = "))
            .map(|_| ())
            .expect_err("unknown field brain_mL");
        let e = load_edited(|t| t.replace("channels = [\"FLAIR\"]", "channels = [\"T1w\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("channel \"T1w\" is not an input"), "{e}");
        let e =
            load_edited(|t| t.replace("channels = [\"FLAIR\"]", "channels = [\"FLAIR\", \"T2\"]"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("must name 1 input(s)"), "{e}");
        let e =
            load_edited(|t| t.replace("brain_ml = [800.0, 3000.0]", "brain_ml = [3000.0, 800.0]"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("brain_ml"), "{e}");
        let e = load_edited(|t| t.replace("max_edge_fraction = 0.5", "max_edge_fraction = 0.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_edge_fraction"), "{e}");
        // a tumour model cannot serve as a brain model (classes [0, 1 ,2, 3]) ...
        let e = load_edited(|t| {
            let own = shipped().display().to_string();
            let brain = shipped().join("../brain-mask-synth").display().to_string();
            t.replace(&format!("model = {brain:?}"), &format!("model = {own:?}"))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("[brain_extraction]"), "{e}");
        // ... and no stage may chain another one: the shipped model has a stage of its own.
        assert!(e.contains("may not have a [brain_extraction]"), "{e}");
    }

    /// `geometry.mirror_axes` (slice2d): distinct in-plane axes, 0 (rows) and 1 (columns).
    #[test]
    fn slice2d_mirror_axes_are_distinct_in_plane_axes() {
        let with = |axes: &'static str| {
            move |t: String| {
                let t: String = t
                    .lines()
                    .filter(|l| !l.starts_with("mirror_axes ="))
                    .map(|l| format!("{l}\n"))
                    .collect();
                t.replacen(
                    "in_plane_interpolation = \"bilinear\"\n",
                    &format!("in_plane_interpolation = \"bilinear\"\nmirror_axes = {axes}\n"),
                    1,
                )
            }
        };
        let m = load_edited(with("[0, 1]")).unwrap();
        assert_eq!(m.file.geometry.mirror_axes, [0, 1]);
        for bad in ["[2]", "[1, 1]"] {
            let e = load_edited(with(bad)).unwrap_err().to_string();
            assert!(e.contains("geometry.mirror_axes"), "{bad}: {e}");
        }
    }

    #[test]
    fn checksum_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(shipped().join("model.toml")).unwrap();
        let brain = shipped().join("../brain-mask-synth").display().to_string();
        let text = text.replace("\"../brain-mask-synth\"", &format!("{brain:?}"));
        std::fs::write(dir.path().join("model.toml"), &text).unwrap();
        let onnx = std::fs::read(shipped().join("brats_synth_unet2d.onnx")).unwrap();
        let mut tampered = onnx.clone();
        *tampered.last_mut().unwrap() ^= 1;
        std::fs::write(dir.path().join("brats_synth_unet2d.onnx"), tampered).unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        std::fs::write(dir.path().join("brats_synth_unet2d.onnx"), onnx).unwrap();
        Manifest::load(dir.path()).unwrap();
    }

    #[test]
    fn unknown_field_and_wrong_schema_are_errors() {
        let text = std::fs::read_to_string(shipped().join("model.toml")).unwrap();
        let typo = text.replace("min_slices = ", "min_slice = ");
        assert!(toml::from_str::<ManifestFile>(&typo).is_err());
        let v2 = text.replace("schema_version = 1", "schema_version = 2");
        let file: ManifestFile = toml::from_str(&v2).unwrap();
        let e = Manifest::from_parts(file, shipped(), Path::new("model.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema_version 2"), "{e}");
    }
}
