//! The network: an ONNX file run by tract-onnx, loaded and optimised once, shared by every worker.

use std::sync::Arc;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use tract_onnx::prelude::*;

use crate::error::SegmentError;
use crate::manifest::Manifest;

// An Arc inside: clones share the optimised plan.
type Plan = Arc<TypedRunnableModel>;

/// A loaded model and its manifest. Cheap to clone (shared plan); `run` takes `&self`, so workers
/// run it concurrently.
#[derive(Clone)]
pub struct Model {
    manifest: Arc<Manifest>,
    plan: Plan,
    /// How many slices of one study run at once (threads).
    slice_threads: usize,
    /// The brain-extraction model of the manifest's `[brain_extraction]`, loaded with this one.
    brain: Option<Box<Model>>,
    /// slice2d `geometry.mirror_axes`: the mirrorings each slice also runs under (in-plane axes
    /// of `[h, w]`), empty for none.
    mirrors: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name())
            .field("version", &self.manifest.version())
            .finish()
    }
}

impl Model {
    /// Loads and optimises the ONNX file the manifest names, with its fixed input shape (and the
    /// brain-extraction model's, when the manifest has one).
    pub fn load(manifest: Manifest) -> Result<Self, SegmentError> {
        let brain = match &manifest.brain {
            Some(b) => Some(Box::new(Model::load((*b.manifest).clone())?)),
            None => None,
        };
        let err = |e: TractError| SegmentError::Model {
            model: manifest.name().to_string(),
            message: format!("{e:#}"),
        };
        let shape = manifest.file.model.input_shape.clone();
        let plan = tract_onnx::onnx()
            .model_for_path(&manifest.onnx_path)
            .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(err)?;
        let mirrors = crate::patch3d::mirror_combinations(&manifest.file.geometry.mirror_axes);
        Ok(Model {
            manifest: Arc::new(manifest),
            plan,
            slice_threads: 1,
            brain,
            mirrors,
        })
    }

    /// Run up to `threads` slices of a study at once (1: one after the other).
    pub fn with_slice_threads(mut self, threads: usize) -> Self {
        self.slice_threads = threads.max(1);
        self.brain = self
            .brain
            .map(|b| Box::new((*b).with_slice_threads(threads)));
        self
    }

    /// The brain-extraction model, when the manifest names one.
    pub fn brain(&self) -> Option<&Model> {
        self.brain.as_deref()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// How many slices (slice2d) or windows (patch3d) of one study run at once.
    pub fn threads(&self) -> usize {
        self.slice_threads
    }

    /// Runs the network once on a whole input tensor of the manifest's `input_shape` (flattened,
    /// standard layout): the output, flattened, checked against `output_shape`. The patch3d path.
    pub fn run_patch(&self, input: &[f32]) -> Result<Vec<f32>, SegmentError> {
        let m = &self.manifest.file.model;
        let err = |message: String| SegmentError::Model {
            model: m.name.clone(),
            message,
        };
        let tensor = Tensor::from_shape(&m.input_shape, input)
            .map_err(|e| err(format!("input does not fit {:?}: {e:#}", m.input_shape)))?;
        let result = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| err(format!("inference failed: {e:#}")))?;
        let out = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| err(format!("output is not f32: {e:#}")))?;
        if out.shape() != m.output_shape.as_slice() {
            return Err(err(format!(
                "output shape {:?}, manifest says {:?}",
                out.shape(),
                m.output_shape
            )));
        }
        Ok(out.iter().copied().collect())
    }

    /// The mirrorings each slice also runs under (slice2d `geometry.mirror_axes`; in-plane axes,
    /// 0 rows, 1 columns), nnU-Net's order; empty for none.
    pub fn mirrors(&self) -> &[Vec<usize>] {
        &self.mirrors
    }

    /// The same network without test-time mirroring: what its golden pair (one plain run per
    /// slice) is compared with.
    pub fn without_mirroring(mut self) -> Self {
        self.mirrors.clear();
        self
    }

    /// Network runs per slice: 1, or 1 + the mirrorings of `geometry.mirror_axes`.
    pub fn runs_per_slice(&self) -> usize {
        1 + self.mirrors.len()
    }

    /// Runs the network slice by slice: `input[k, channel, v, u]` -> logits `[k, class, v, u]`.
    /// With `geometry.mirror_axes`, each slice's logits are the mean of the plain run and of every
    /// mirrored run mirrored back (nnU-Net's test-time mirroring, in two dimensions).
    pub fn run(&self, input: ArrayView4<f32>) -> Result<Array4<f32>, SegmentError> {
        let m = &self.manifest.file.model;
        let (n, c, h, w) = input.dim();
        if [1, c, h, w] != m.input_shape[..] {
            return Err(SegmentError::Model {
                model: m.name.clone(),
                message: format!(
                    "input of {c}x{h}x{w} per slice does not match the model's {:?}",
                    m.input_shape
                ),
            });
        }
        let k = m.output_shape[1];
        let mut out = Array4::<f32>::zeros((n, k, h, w));
        // Slices are independent: split them into contiguous runs, one per thread, each
        // thread running the shared plan with its own state. The result does not depend on
        // the split (every slice goes through the same ops).
        let threads = self.slice_threads.clamp(1, n.max(1));
        let per = n.div_ceil(threads).max(1);
        let chunks: Vec<_> = out
            .axis_chunks_iter_mut(ndarray::Axis(0), per)
            .zip(input.axis_chunks_iter(ndarray::Axis(0), per))
            .collect();
        if chunks.len() <= 1 {
            for (out, input) in chunks {
                self.run_slices(input, out)?;
            }
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = chunks
                    .into_iter()
                    .map(|(out, input)| scope.spawn(move || self.run_slices(input, out)))
                    .collect();
                running
                    .into_iter()
                    .map(|t| t.join().expect("inference thread panicked"))
                    .collect::<Result<Vec<()>, _>>()
            })?;
        }
        Ok(out)
    }

    /// Runs `input[k, ...]` slice by slice into `out[k, ...]`.
    fn run_slices(
        &self,
        input: ArrayView4<f32>,
        mut out: ndarray::ArrayViewMut4<f32>,
    ) -> Result<(), SegmentError> {
        let m = &self.manifest.file.model;
        let (n, c, h, w) = input.dim();
        let err = |message: String| SegmentError::Model {
            model: m.name.clone(),
            message,
        };
        let run = |x: ArrayView3<f32>| -> Result<Array3<f32>, SegmentError> {
            let data: Vec<f32> = x.iter().copied().collect();
            let tensor =
                Tensor::from_shape(&[1, c, h, w], &data).map_err(|e| err(format!("{e:#}")))?;
            let result = self
                .plan
                .run(tvec!(tensor.into()))
                .map_err(|e| err(format!("inference failed: {e:#}")))?;
            let logits = result[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| err(format!("output is not f32: {e:#}")))?;
            if logits.shape() != m.output_shape.as_slice() {
                return Err(err(format!(
                    "output shape {:?}, manifest says {:?}",
                    logits.shape(),
                    m.output_shape
                )));
            }
            let k = m.output_shape[1];
            Ok(
                Array3::from_shape_vec((k, h, w), logits.iter().copied().collect())
                    .expect("shape checked above"),
            )
        };
        for z in 0..n {
            let slice = input.index_axis(Axis(0), z);
            let mut logits = run(slice)?;
            for axes in &self.mirrors {
                // In-plane axis a of the slice is axis a + 1 of [channel, v, u] and [class, v, u].
                let mut flipped = slice;
                for &a in axes {
                    flipped.invert_axis(Axis(a + 1));
                }
                let mut back = run(flipped)?;
                for &a in axes {
                    back.invert_axis(Axis(a + 1));
                }
                logits += &back;
            }
            if !self.mirrors.is_empty() {
                logits /= (self.mirrors.len() + 1) as f32;
            }
            out.index_axis_mut(Axis(0), z).assign(&logits);
        }
        Ok(())
    }
}
