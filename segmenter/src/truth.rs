//! The ground truth that comes with the bundled synthetic studies (`testdata/studies/<name>/truth/`,
//! written by `models/synth/make_study.py`): `truth.json` and raw `u8` volumes in DICOM order
//! (`[slice][row][column]`, the slices those of `reference_sop_instance_uids`). Read by `segnode
//! demo` (Dice, the montage) and the pipeline tests; the worker never reads it.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Axis};

/// Why a study's ground truth cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("truth.json: {0}")]
    Field(&'static str),
    #[error("truth labels do not match the reference grid")]
    Shape,
}

/// A study's `truth/` folder.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    dir: PathBuf,
    meta: serde_json::Value,
    sops: Vec<String>,
}

impl GroundTruth {
    /// The truth of the study in `study_dir`; `None` when it has no `truth/truth.json`.
    pub fn open(study_dir: &Path) -> Result<Option<GroundTruth>, TruthError> {
        let dir = study_dir.join("truth");
        let path = dir.join("truth.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| TruthError::Io {
            path: path.clone(),
            source,
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TruthError::Json { path, source })?;
        let sops = meta["reference_sop_instance_uids"]
            .as_array()
            .ok_or(TruthError::Field("reference_sop_instance_uids"))?
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        Ok(Some(GroundTruth { dir, meta, sops }))
    }

    /// The raw volume that `truth.json`'s `key` names (`raw_file`: the labels, by default
    /// `labels_ref.u8`; `brain_file`: the brain mask), each slice `rows` x `cols`, re-ordered so that
    /// slice k is the one of SOP Instance UID `sops[k]`. `None` when one of `sops` is not in the
    /// truth.
    pub fn volume(
        &self,
        key: &'static str,
        sops: &[&str],
        rows: usize,
        cols: usize,
    ) -> Result<Option<Array3<u8>>, TruthError> {
        let name = match (self.meta[key].as_str(), key) {
            (Some(name), _) => name,
            (None, "raw_file") => "labels_ref.u8",
            (None, _) => return Err(TruthError::Field(key)),
        };
        let path = self.dir.join(name);
        let raw = std::fs::read(&path).map_err(|source| TruthError::Io { path, source })?;
        if raw.len() != self.sops.len() * rows * cols {
            return Err(TruthError::Shape);
        }
        let raw = Array3::from_shape_vec((self.sops.len(), rows, cols), raw)
            .map_err(|_| TruthError::Shape)?;
        let mut out = Array3::<u8>::zeros((sops.len(), rows, cols));
        for (k, sop) in sops.iter().enumerate() {
            let Some(src) = self.sops.iter().position(|u| u == sop) else {
                return Ok(None);
            };
            out.index_axis_mut(Axis(0), k)
                .assign(&raw.index_axis(Axis(0), src));
        }
        Ok(Some(out))
    }
}
