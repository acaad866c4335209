//! Fixtures shared by the modules, built once per test run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use segmenter::{Manifest, Model};

/// The workspace root (models/, testdata/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped model (`models/brats-synth-unet2d`, with its brain-extraction stage), loaded and
/// optimised once for every test that runs it; each caller gets a clone (the plan is shared).
pub fn shipped_model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Model::load(Manifest::load(&root().join("models/brats-synth-unet2d")).unwrap()).unwrap()
        })
        .clone()
}

/// The 3D model (`models/brats-synth-segresnet3d`, patch3d, with the same brain-extraction stage),
/// loaded and optimised once per run; two windows at once, as `--inference-threads 2` runs it.
pub fn segresnet3d_model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Model::load(Manifest::load(&root().join("models/brats-synth-segresnet3d")).unwrap())
                .unwrap()
                .with_slice_threads(2)
        })
        .clone()
}
