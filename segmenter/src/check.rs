//! `segnode model check DIR`: what a team runs first when bringing a model. Loads the manifest
//! (schema, consistency, ONNX SHA-256), reads the ONNX graph (opset, every op against tract's
//! registry, the input and output shapes against the manifest), optimises it with tract, runs
//! synthetic inputs through it and estimates the inference time of one study. No printing here: the
//! binary prints the [`Report`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::prelude::Framework;

use crate::canonical::Canonical;
use crate::error::SegmentError;
use crate::manifest::Manifest;
use crate::model::Model;
use crate::patch3d::{windows, Window};
use crate::volume::Grid;

/// Why a model cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Manifest(#[from] SegmentError),
    #[error("cannot read the ONNX file {path}: {message}")]
    Onnx { path: String, message: String },
    #[error(
        "unsupported operator {op:?} (domain {domain:?}) at node {node:?}: tract-onnx has no \
         implementation for it; export without it (e.g. another opset or a replacement op)"
    )]
    UnsupportedOp {
        op: String,
        domain: String,
        node: String,
    },
    #[error(
        "dynamic shape: {tensor} {name:?} axis {axis} is {dim}; segnode runs fixed shapes only: \
         export with a fixed input shape (the manifest says {manifest:?})"
    )]
    DynamicShape {
        tensor: &'static str,
        name: String,
        axis: usize,
        dim: String,
        manifest: Vec<usize>,
    },
    #[error(
        "shape mismatch: the ONNX {tensor} {name:?} is {onnx:?}, the manifest says {manifest:?}"
    )]
    ShapeMismatch {
        tensor: &'static str,
        name: String,
        onnx: Vec<i64>,
        manifest: Vec<usize>,
    },
    #[error("the ONNX graph has no {tensor} named {name:?} (it has {found:?})")]
    NameMismatch {
        tensor: &'static str,
        name: String,
        found: Vec<String>,
    },
}

/// What the graph holds.
#[derive(Debug, Clone)]
pub struct GraphSummary {
    /// The default-domain opset.
    pub opset: i64,
    /// Operator -> node count.
    pub ops: BTreeMap<String, usize>,
    pub input: (String, Vec<i64>),
    pub output: (String, Vec<i64>),
    pub parameters: usize,
}

/// The check's findings.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub onnx_sha256: String,
    pub graph: GraphSummary,
    /// Loading + optimising with tract.
    pub load: Duration,
    /// Median of the synthetic runs (one network run: a slice or a window), one thread.
    pub run: Duration,
    pub runs_measured: usize,
    /// The study the estimate is for, in words.
    pub study: String,
    /// Network runs that study takes (slices or windows, each x its mirrorings).
    pub runs_per_study: usize,
    /// runs_per_study x run (one thread; the brain-extraction stage not included).
    pub per_study: Duration,
    /// f32 arrays one study of that size holds at once in the model's own stage (input + output on
    /// the model grid), in bytes.
    pub study_arrays_bytes: usize,
}

/// Reads the ONNX file's protobuf.
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, CheckError> {
    tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| CheckError::Onnx {
            path: path.display().to_string(),
            message: format!("{e:#}"),
        })
}

fn dims_of(
    v: &pb::ValueInfoProto,
    tensor: &'static str,
    manifest: &[usize],
) -> Result<Vec<i64>, CheckError> {
    let shape = match &v.r#type {
        Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(t)),
            ..
        }) => t.shape.as_ref(),
        _ => None,
    };
    let Some(shape) = shape else {
        return Err(CheckError::DynamicShape {
            tensor,
            name: v.name.clone(),
            axis: 0,
            dim: "unknown (no shape in the graph)".into(),
            manifest: manifest.to_vec(),
        });
    };
    shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| match &d.value {
            Some(DimValue::DimValue(n)) if *n > 0 => Ok(*n),
            other => Err(CheckError::DynamicShape {
                tensor,
                name: v.name.clone(),
                axis,
                dim: match other {
                    Some(DimValue::DimParam(p)) => format!("the symbol {p:?}"),
                    Some(DimValue::DimValue(n)) => format!("{n}"),
                    None => "unset".into(),
                },
                manifest: manifest.to_vec(),
            }),
        })
        .collect()
}

fn find<'a>(
    list: &[&'a pb::ValueInfoProto],
    name: &str,
    tensor: &'static str,
) -> Result<&'a pb::ValueInfoProto, CheckError> {
    list.iter()
        .find(|v| v.name == name)
        .copied()
        .ok_or_else(|| CheckError::NameMismatch {
            tensor,
            name: name.to_string(),
            found: list.iter().map(|v| v.name.clone()).collect(),
        })
}

/// Checks the graph against the manifest and tract's operator registry.
pub fn inspect(manifest: &Manifest, proto: &pb::ModelProto) -> Result<GraphSummary, CheckError> {
    let m = &manifest.file.model;
    let graph = proto.graph.as_ref().ok_or_else(|| CheckError::Onnx {
        path: manifest.onnx_path.display().to_string(),
        message: "the model has no graph".into(),
    })?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let registry = tract_onnx::onnx();
    let mut ops = BTreeMap::new();
    for node in &graph.node {
        let known = (node.domain.is_empty() || node.domain == "ai.onnx")
            && registry.op_register.0.contains_key(&node.op_type);
        if !known {
            return Err(CheckError::UnsupportedOp {
                op: node.op_type.clone(),
                domain: if node.domain.is_empty() {
                    "ai.onnx".into()
                } else {
                    node.domain.clone()
                },
                node: node.name.clone(),
            });
        }
        *ops.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect();
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    let input = find(&inputs, &m.input_name, "input")?;
    let output = find(&outputs, &m.output_name, "output")?;
    let in_dims = dims_of(input, "input", &m.input_shape)?;
    let out_dims = dims_of(output, "output", &m.output_shape)?;
    for (tensor, v, dims, want) in [
        ("input", input, &in_dims, &m.input_shape),
        ("output", output, &out_dims, &m.output_shape),
    ] {
        if dims.len() != want.len() || dims.iter().zip(want.iter()).any(|(a, b)| *a as usize != *b)
        {
            return Err(CheckError::ShapeMismatch {
                tensor,
                name: v.name.clone(),
                onnx: dims.clone(),
                manifest: want.clone(),
            });
        }
    }
    let parameters = graph
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>().max(0) as usize)
        .sum();
    Ok(GraphSummary {
        opset,
        ops,
        input: (input.name.clone(), in_dims),
        output: (output.name.clone(), out_dims),
        parameters,
    })
}

/// The study the time estimate is for: BraTS-sized, 240 x 240 x 155 at 1 mm, axial.
pub fn reference_study_grid() -> Grid {
    Grid {
        slices: 155,
        rows: 240,
        cols: 240,
        row_dir: [1.0, 0.0, 0.0],
        col_dir: [0.0, 1.0, 0.0],
        normal: [0.0, 0.0, 1.0],
        spacing: [1.0, 1.0],
        slice_step: 1.0,
        origin: [-120.0, -120.0, -77.0],
    }
}

/// The whole check of the model folder (or model.toml) at `path`: `runs` synthetic runs timed.
pub fn check(path: &Path, runs: usize) -> Result<Report, CheckError> {
    let manifest = Manifest::load(path)?;
    let proto = read_proto(&manifest.onnx_path)?;
    let graph = inspect(&manifest, &proto)?;
    drop(proto);
    let started = Instant::now();
    let model = Model::load(manifest.clone())?;
    let load = started.elapsed();
    let m = &manifest.file.model;
    let numel: usize = m.input_shape.iter().product();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<f32> = (0..numel)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let out = model.run_patch(&input)?;
        times.push(started.elapsed());
        if out.iter().any(|v| !v.is_finite()) {
            return Err(CheckError::Onnx {
                path: manifest.onnx_path.display().to_string(),
                message: "the synthetic input gave a non-finite output".into(),
            });
        }
    }
    times.sort();
    let run = times[times.len() / 2];
    let grid = reference_study_grid();
    let study = "240 x 240 x 155 voxels of 1 mm, axial (BraTS size)".to_string();
    let out_per_run: usize = m.output_shape.iter().product();
    let (runs_per_study, study_arrays_bytes) = if manifest.is_patch3d() {
        let g = &manifest.file.geometry;
        let canonical = Canonical::new(
            &grid,
            g.orientation.as_deref().unwrap_or("RAS"),
            g.target_spacing_mm.unwrap_or([1.0; 3]),
        )
        .map_err(|message| CheckError::Onnx {
            path: path.display().to_string(),
            message,
        })?;
        let sw = manifest
            .file
            .sliding_window
            .as_ref()
            .expect("validated patch3d");
        let win = Window::from_manifest(sw);
        let shape = canonical.shape();
        let padded = [0, 1, 2].map(|d| shape[d].max(win.patch[d]));
        let n = windows(&win, padded)
            .map_err(|message| CheckError::Onnx {
                path: path.display().to_string(),
                message,
            })?
            .len();
        let voxels: usize = padded.iter().product();
        let channels = manifest.channels() + m.output_shape[1] + 1;
        (
            n * (win.mirror_combinations().len() + 1),
            voxels * channels * 4,
        )
    } else {
        (
            grid.slices * model.runs_per_slice(),
            grid.slices * (numel + out_per_run) * 4,
        )
    };
    Ok(Report {
        name: manifest.name().to_string(),
        version: manifest.version().to_string(),
        kind: manifest.file.geometry.kind.clone(),
        onnx_sha256: manifest.file.model.onnx_sha256.clone(),
        graph,
        load,
        run,
        runs_measured: times.len(),
        study,
        runs_per_study,
        per_study: run * runs_per_study as u32,
        study_arrays_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    fn parity() -> (Manifest, pb::ModelProto) {
        let m = Manifest::load(&models().join("parity-patch3d")).unwrap();
        let p = read_proto(&m.onnx_path).unwrap();
        (m, p)
    }

    #[test]
    fn the_parity_model_passes_inspection() {
        let (m, p) = parity();
        let s = inspect(&m, &p).unwrap();
        assert_eq!(s.opset, 17);
        assert_eq!(s.ops["Conv"], 4);
        assert_eq!(s.input.1, vec![1, 4, 32, 24, 16]);
    }

    #[test]
    fn unsupported_op_dynamic_shape_and_mismatch_are_named() {
        let (m, p) = parity();
        let mut bad = p.clone();
        let g = bad.graph.as_mut().unwrap();
        g.node[1].op_type = "FancyNorm".into();
        let e = inspect(&m, &bad).unwrap_err().to_string();
        assert!(
            e.contains("\"FancyNorm\"") && e.contains("\"relu1\""),
            "{e}"
        );

        let mut dynamic = p.clone();
        let g = dynamic.graph.as_mut().unwrap();
        if let Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(t)),
            ..
        }) = &mut g.input[0].r#type
        {
            t.shape.as_mut().unwrap().dim[2].value = Some(DimValue::DimParam("depth".into()));
        }
        let e = inspect(&m, &dynamic).unwrap_err().to_string();
        assert!(
            e.contains("dynamic shape") && e.contains("\"depth\"") && e.contains("axis 2"),
            "{e}"
        );

        let mut other = m.clone();
        other.file.model.input_shape = vec![1, 4, 32, 24, 8];
        let e = inspect(&other, &p).unwrap_err().to_string();
        assert!(
            e.contains("shape mismatch") && e.contains("[1, 4, 32, 24, 16]"),
            "{e}"
        );
    }
}
