//! The network: an ONNX file run by tract-onnx, loaded and optimised once, shared by every worker.

use std::sync::Arc;

use ndarray::{s, Array4, ArrayView4};
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
    /// Loads and optimises the ONNX file the manifest names, with its fixed input shape.
    pub fn load(manifest: Manifest) -> Result<Self, SegmentError> {
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
        Ok(Model {
            manifest: Arc::new(manifest),
            plan,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Runs the network slice by slice: `input[k, channel, v, u]` -> logits `[k, class, v, u]`.
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
        for z in 0..n {
            let slice = input.slice(s![z..z + 1, .., .., ..]);
            let data: Vec<f32> = slice.iter().copied().collect();
            let tensor =
                Tensor::from_shape(&[1, c, h, w], &data).map_err(|e| SegmentError::Model {
                    model: m.name.clone(),
                    message: format!("{e:#}"),
                })?;
            let result = self
                .plan
                .run(tvec!(tensor.into()))
                .map_err(|e| SegmentError::Model {
                    model: m.name.clone(),
                    message: format!("inference failed: {e:#}"),
                })?;
            let logits =
                result[0]
                    .to_plain_array_view::<f32>()
                    .map_err(|e| SegmentError::Model {
                        model: m.name.clone(),
                        message: format!("output is not f32: {e:#}"),
                    })?;
            if logits.shape() != m.output_shape.as_slice() {
                return Err(SegmentError::Model {
                    model: m.name.clone(),
                    message: format!(
                        "output shape {:?}, manifest says {:?}",
                        logits.shape(),
                        m.output_shape
                    ),
                });
            }
            for (dst, src) in out
                .slice_mut(s![z..z + 1, .., .., ..])
                .iter_mut()
                .zip(logits.iter())
            {
                *dst = *src;
            }
        }
        Ok(out)
    }
}

/// Lets tract's matrix kernels use `threads` threads (process-wide; call once at start-up).
pub fn set_inference_threads(threads: usize) {
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
}
