//! tract-onnx inference benchmark for a slice2d model on one full preprocessed volume.
//!
//! cargo run -p segmenter --example bench_inference -- --model models/brats-synth-unet2d \
//!     --input VOLUME.f32 --threads 2 --repeat 3 --output TRACT_OUT.f32
//!
//! VOLUME.f32: raw little-endian float32 [slices, C, H, W] (already normalised, see models/preprocess.py);
//! C, H, W come from the manifest's input_shape. Runs every slice through the optimised fixed-shape model,
//! prints one JSON line with the time per volume (min and median over --repeat runs, after one warm-up slice),
//! and writes the logits [slices, K, H, W] to --output so bench/inference/ort_bench.py can compare them.

use std::path::PathBuf;
use std::time::Instant;

use tract_onnx::prelude::*;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_dir =
        PathBuf::from(arg(&args, "--model").unwrap_or_else(|| "models/brats-synth-unet2d".into()));
    let input = PathBuf::from(arg(&args, "--input").expect("--input VOLUME.f32"));
    let threads: usize = arg(&args, "--threads")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let repeat: usize = arg(&args, "--repeat")
        .map(|s| s.parse().unwrap())
        .unwrap_or(3);
    let output = arg(&args, "--output").map(PathBuf::from);
    // --batch B: run B slices per call (input fact [B, C, H, W]; the graph's ops are batch-agnostic even though
    // the ONNX declares N = 1). Exploratory only: the manifest's contract is N = 1.
    let batch: usize = arg(&args, "--batch")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);

    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(model_dir.join("model.toml"))?)?;
    let onnx = manifest["model"]["onnx"].as_str().expect("model.onnx");
    let shape: Vec<usize> = manifest["model"]["input_shape"]
        .as_array()
        .expect("input_shape")
        .iter()
        .map(|v| v.as_integer().unwrap() as usize)
        .collect();
    let per_slice: usize = shape.iter().product();
    let mut shape = shape;
    shape[0] = batch;

    let t_load = Instant::now();
    let model = tract_onnx::onnx()
        .model_for_path(model_dir.join(onnx))?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let load_s = t_load.elapsed().as_secs_f64();

    let bytes = std::fs::read(&input)?;
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        data.len() % per_slice,
        0,
        "input is not a whole number of slices"
    );
    let slices = data.len() / per_slice;
    let calls = slices.div_ceil(batch);
    let mut padded = data.clone();
    padded.resize(calls * batch * per_slice, 0.0);
    let inputs: Vec<Tensor> = (0..calls)
        .map(|k| {
            Tensor::from_shape(
                &shape,
                &padded[k * batch * per_slice..(k + 1) * batch * per_slice],
            )
        })
        .collect::<TractResult<_>>()?;

    model.run(tvec!(inputs[0].clone().into()))?; // warm-up
    let by_node = args.iter().any(|a| a == "--profile-nodes");
    if by_node || args.iter().any(|a| a == "--profile-ops") {
        // time spent per op kind over one pass of the volume (stderr), to see where tract spends its time
        let mut per_op: std::collections::BTreeMap<String, f64> = Default::default();
        let mut state = model.spawn()?;
        for x in &inputs {
            state.run_plan_with_eval(tvec!(x.clone().into()), |ctx, st, node, input| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, st, node, input);
                let key = if by_node {
                    format!("{:>4} {} {}", node.id, node.op().name(), node.name)
                } else {
                    node.op().name().to_string()
                };
                *per_op.entry(key).or_default() += t.elapsed().as_secs_f64();
                r
            })?;
        }
        let mut v: Vec<_> = per_op.into_iter().collect();
        v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        for (op, t) in v {
            eprintln!("op {op:<60} {t:8.4} s");
        }
    }
    // --slice-threads N: N slices at once, each thread running the shared plan on a contiguous
    // run of slices (what `Model::with_slice_threads` does in the worker).
    let slice_threads: usize = arg(&args, "--slice-threads")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1)
        .max(1);
    let per = inputs.len().div_ceil(slice_threads).max(1);
    let run_volume = || -> TractResult<Vec<TValue>> {
        std::thread::scope(|scope| {
            let running: Vec<_> = inputs
                .chunks(per)
                .map(|chunk| {
                    let model = &model;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|x| Ok(model.run(tvec!(x.clone().into()))?.remove(0)))
                            .collect::<TractResult<Vec<TValue>>>()
                    })
                })
                .collect();
            let mut outs = Vec::with_capacity(inputs.len());
            for t in running {
                outs.extend(t.join().expect("no panic")?);
            }
            Ok(outs)
        })
    };
    let mut times = Vec::new();
    let mut logits: Vec<f32> = Vec::new();
    for r in 0..repeat {
        let t = Instant::now();
        let outs = run_volume()?;
        times.push(t.elapsed().as_secs_f64());
        if r == 0 {
            for o in &outs {
                logits.extend(o.to_plain_array_view::<f32>()?.iter().copied());
            }
        }
    }
    let out_per_slice = logits.len() / (calls * batch);
    logits.truncate(slices * out_per_slice);
    if let Some(out) = output {
        let mut b = Vec::with_capacity(logits.len() * 4);
        for v in &logits {
            b.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(out, b)?;
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"runtime\":\"tract-onnx 0.23.9\",\"threads\":{threads},\"slice_threads\":{slice_threads},\"batch\":{batch},\"slices\":{slices},\"load_optimise_s\":{load_s:.3},\"seconds_per_volume_min\":{:.4},\"seconds_per_volume_median\":{:.4},\"runs\":{:?}}}",
        sorted[0],
        sorted[sorted.len() / 2],
        times.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>()
    );
    Ok(())
}
