//! Golden test for the shipped model: run models/<name>/<onnx> through tract-onnx on the committed input and
//! compare with the onnxruntime output committed next to it (models/make_golden.py). max |diff| <= 1e-4.

use std::path::{Path, PathBuf};

use ndarray::{Array4, ArrayView4};
use tract_onnx::prelude::*;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-unet2d")
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        bytes.len() % 4,
        0,
        "{}: not a whole number of f32",
        path.display()
    );
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One of the golden pair's tensors, named by `golden.json`'s `key`.
fn golden_file(dir: &Path, meta: &serde_json::Value, key: &str) -> Vec<f32> {
    read_f32(&dir.join("golden").join(meta[key].as_str().unwrap()))
}

fn shape4(v: &serde_json::Value) -> [usize; 4] {
    let a: Vec<usize> = v
        .as_array()
        .expect("shape array")
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [a[0], a[1], a[2], a[3]]
}

#[test]
fn tract_matches_onnxruntime_on_golden_pair() -> TractResult<()> {
    let dir = model_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden/golden.json"))?)?;
    let in_shape = shape4(&meta["input_shape"]);
    let out_shape = shape4(&meta["output_shape"]);
    let tol = meta["tolerance_max_abs"].as_f64().unwrap_or(1e-4) as f32;

    // The manifest names the ONNX file and the fixed shapes; check they agree with the golden pair.
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(dir.join("model.toml"))?)?;
    let onnx_file = manifest["model"]["onnx"].as_str().expect("model.onnx");
    assert_eq!(onnx_file, meta["onnx"].as_str().unwrap());
    let m_in: Vec<usize> = manifest["model"]["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_integer().unwrap() as usize)
        .collect();
    assert_eq!(m_in, in_shape.to_vec(), "manifest input_shape vs golden");

    let input = golden_file(&dir, &meta, "input_file");
    let expected = golden_file(&dir, &meta, "output_file");
    assert_eq!(input.len(), in_shape.iter().product::<usize>());
    let expected = Array4::from_shape_vec(out_shape, expected).expect("output shape");

    let model = tract_onnx::onnx()
        .model_for_path(dir.join(onnx_file))?
        .with_input_fact(0, f32::fact(in_shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let x = Tensor::from_shape(&in_shape, &input)?;
    let out = model.run(tvec!(x.into()))?;
    let got = out[0].to_plain_array_view::<f32>()?;
    assert_eq!(got.shape(), &out_shape[..], "output shape");
    let got: Vec<f32> = got.iter().copied().collect();
    let got = ArrayView4::from_shape(out_shape, &got).unwrap();

    let mut max_diff = 0f32;
    for (a, b) in got.iter().zip(expected.iter()) {
        assert!(a.is_finite(), "non-finite tract output");
        max_diff = max_diff.max((a - b).abs());
    }
    // Labels must agree too (argmax over classes), pixel by pixel.
    let (classes, rows, cols) = (out_shape[1], out_shape[2], out_shape[3]);
    let mut label_mismatch = 0usize;
    for j in 0..rows {
        for i in 0..cols {
            let am = |v: &ArrayView4<f32>| {
                (0..classes).fold(0, |best, c| {
                    if v[[0, c, j, i]] > v[[0, best, j, i]] {
                        c
                    } else {
                        best
                    }
                })
            };
            if am(&got) != am(&expected.view()) {
                label_mismatch += 1;
            }
        }
    }
    eprintln!("golden: max |tract - onnxruntime| = {max_diff:.3e} (tolerance {tol:.0e}), label mismatches {label_mismatch}");
    assert!(max_diff <= tol, "max abs diff {max_diff} > {tol}");
    Ok(())
}

/// The worker runs several slices of a study at once (`Model::with_slice_threads`); the logits
/// must not depend on how the slices are split across threads, and each slice must still match
/// the golden output.
#[test]
fn slices_run_in_parallel_give_the_same_logits() {
    let dir = model_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden/golden.json")).unwrap())
            .unwrap();
    let [_, c, h, w] = shape4(&meta["input_shape"]);
    let tol = meta["tolerance_max_abs"].as_f64().unwrap_or(1e-4) as f32;
    let golden_in = golden_file(&dir, &meta, "input_file");
    let golden_out = golden_file(&dir, &meta, "output_file");
    // 5 slices: the golden one, then versions of it flipped and scaled, so they differ.
    let n = 5;
    let mut volume = Array4::<f32>::zeros((n, c, h, w));
    for z in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let xs = if z % 2 == 1 { w - 1 - x } else { x };
                    volume[[z, ch, y, x]] =
                        golden_in[(ch * h + y) * w + xs] * (1.0 + 0.1 * z as f32);
                }
            }
        }
    }
    let model = crate::common::shipped_model();
    let one = model
        .clone()
        .with_slice_threads(1)
        .run(volume.view())
        .unwrap();
    let three = model.with_slice_threads(3).run(volume.view()).unwrap();
    assert_eq!(one, three, "logits depend on the thread split");
    // The golden pair is one plain run: the first slice without test-time mirroring.
    let plain = crate::common::shipped_model()
        .without_mirroring()
        .run(volume.view())
        .unwrap();
    let first: Vec<f32> = plain
        .index_axis(ndarray::Axis(0), 0)
        .iter()
        .copied()
        .collect();
    let max_diff = first
        .iter()
        .zip(&golden_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff <= tol, "slice 0 vs golden: {max_diff}");
}

/// `geometry.mirror_axes` (slice2d): each slice's logits are the mean of the plain run and of the
/// runs on the slice mirrored along rows, columns and both, each mirrored back; checked against
/// those four runs made by hand with the plain network.
#[test]
fn slice2d_mirroring_is_the_mean_of_the_mirrored_runs() {
    use ndarray::s;
    let dir = model_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden/golden.json")).unwrap())
            .unwrap();
    let [_, c, h, w] = shape4(&meta["input_shape"]);
    let golden_in = golden_file(&dir, &meta, "input_file");
    // Two slices: the golden one and a shifted copy, so rows and columns both matter.
    let volume = Array4::from_shape_fn((2, c, h, w), |(z, ch, y, x)| {
        golden_in[(ch * h + (y + 7 * z) % h) * w + x]
    });
    // The shipped manifest with mirror_axes = [0, 1] (and the brain model by absolute path).
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    let brain = dir.join("../brain-mask-synth").display().to_string();
    let mut edited: String = text
        .lines()
        .filter(|l| !l.starts_with("mirror_axes ="))
        .map(|l| format!("{l}\n"))
        .collect();
    edited = edited.replace("\"../brain-mask-synth\"", &format!("{brain:?}"));
    edited = edited.replace(
        "in_plane_interpolation = \"bilinear\"\n",
        "in_plane_interpolation = \"bilinear\"\nmirror_axes = [0, 1]\n",
    );
    assert!(edited.contains("mirror_axes = [0, 1]"));
    std::fs::write(tmp.path().join("model.toml"), edited).unwrap();
    let onnx = meta["onnx"].as_str().unwrap();
    std::fs::copy(dir.join(onnx), tmp.path().join(onnx)).unwrap();
    let mirrored = segmenter::Model::load(segmenter::Manifest::load(tmp.path()).unwrap()).unwrap();
    assert_eq!(mirrored.mirrors(), &[vec![0], vec![1], vec![0, 1]]);
    assert_eq!(mirrored.runs_per_slice(), 4);
    let got = mirrored.run(volume.view()).unwrap();

    let plain = mirrored.without_mirroring();
    let run = |v: ArrayView4<f32>| plain.run(v).unwrap();
    let rows = run(volume.slice(s![.., .., ..;-1, ..]));
    let cols = run(volume.slice(s![.., .., .., ..;-1]));
    let both = run(volume.slice(s![.., .., ..;-1, ..;-1]));
    let mut want = run(volume.view());
    want += &rows.slice(s![.., .., ..;-1, ..]);
    want += &cols.slice(s![.., .., .., ..;-1]);
    want += &both.slice(s![.., .., ..;-1, ..;-1]);
    want /= 4.0;
    let max_diff = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff <= 1e-6, "mirrored logits differ by {max_diff}");
    // and mirroring changes something: the network is not mirror-symmetric
    let plain_diff = got
        .iter()
        .zip(run(volume.view()).iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        plain_diff > 1e-3,
        "mirroring changed nothing ({plain_diff})"
    );
}

fn shape_of(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("shape array")
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The 3D model's golden pair (models/make_golden3d.py): one canonical window of a stripped head
/// (int8 / 16, gzip), onnxruntime's output at every 4th voxel along each axis and its count of
/// positive logits per channel. tract must agree within 1e-4 on the stored voxels and threshold
/// the same voxels (logits within the tolerance of 0 may go either way).
#[test]
fn segresnet3d_tract_matches_onnxruntime_on_golden_pair() -> TractResult<()> {
    use std::io::Read;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-segresnet3d");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden/golden.json"))?)?;
    let in_shape = shape_of(&meta["input_shape"]);
    let out_shape = shape_of(&meta["output_shape"]);
    let sub_shape = shape_of(&meta["output_sub_shape"]);
    let stride = meta["output_sub_stride"].as_u64().unwrap() as usize;
    let scale = meta["input_scale"].as_f64().unwrap() as f32;
    let tol = meta["tolerance_max_abs"].as_f64().unwrap() as f32;
    let manifest = segmenter::Manifest::load(&dir).expect("manifest (and its SHA-256)");
    assert_eq!(
        manifest.file.model.input_shape, in_shape,
        "manifest vs golden"
    );
    assert_eq!(
        manifest.file.model.output_shape, out_shape,
        "manifest vs golden"
    );

    let n: usize = in_shape.iter().product();
    let mut raw = Vec::with_capacity(n);
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("golden/input.i8.gz"))?)
        .take(n as u64 + 1)
        .read_to_end(&mut raw)?;
    assert_eq!(raw.len(), n, "input size");
    let input: Vec<f32> = raw.iter().map(|&b| f32::from(b as i8) / scale).collect();
    let expected = read_f32(
        &dir.join("golden")
            .join(meta["output_sub_file"].as_str().unwrap()),
    );
    let expected = ndarray::ArrayD::from_shape_vec(sub_shape, expected).expect("sub shape");

    let model = tract_onnx::onnx()
        .model_for_path(dir.join(meta["onnx"].as_str().unwrap()))?
        .with_input_fact(0, f32::fact(&in_shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let out = model.run(tvec!(Tensor::from_shape(&in_shape, &input)?.into()))?;
    let got = out[0].to_plain_array_view::<f32>()?;
    assert_eq!(got.shape(), &out_shape[..], "output shape");

    let mut max_diff = 0f32;
    for (idx, &e) in expected.indexed_iter() {
        let g = got[[
            idx[0],
            idx[1],
            idx[2] * stride,
            idx[3] * stride,
            idx[4] * stride,
        ]];
        assert!(g.is_finite(), "non-finite tract output");
        max_diff = max_diff.max((g - e).abs());
    }
    let positive = meta["output_positive_per_channel"].as_array().unwrap();
    for (c, want) in positive.iter().enumerate() {
        let want = want.as_u64().unwrap() as usize;
        let ch = got.index_axis(ndarray::Axis(1), c);
        let pos = ch.iter().filter(|&&v| v > 0.0).count();
        let near_zero = ch.iter().filter(|&&v| v.abs() <= tol).count();
        eprintln!("golden 3D: channel {c}: {pos} positive logits (onnxruntime {want}), {near_zero} within {tol:.0e} of 0");
        assert!(
            pos.abs_diff(want) <= near_zero,
            "channel {c}: tract thresholds {pos} voxels, onnxruntime {want}"
        );
    }
    eprintln!(
        "golden 3D: max |tract - onnxruntime| = {max_diff:.3e} on {} voxels (tolerance {tol:.0e})",
        expected.len()
    );
    assert!(max_diff <= tol, "max abs diff {max_diff} > {tol}");
    Ok(())
}
