//! patch3d parity with the peers themselves, not with ourselves:
//! - on the same ONNX (models/parity-patch3d, a tiny 3D conv net with fixed random weights) and the
//!   same canonical input, segnode's sliding window equals MONAI's `sliding_window_inference`
//!   (constant and gaussian) and nnU-Net v2's `predict_sliding_window_return_logits` (its Gaussian,
//!   step 0.5, with and without mirroring) within 1e-4;
//! - segnode's canonical resampling + normalisation of a DICOM study equals MONAI's chain
//!   (Orientation, Spacing, NormalizeIntensity) on the same study converted to NIfTI by dcm2niix.
//!
//! The peers run in `.venv-ref` (scripts/install-test-deps.sh; `SEGNODE_REF_VENV` overrides), the
//! synthetic study generator in the peers venv.

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{Array3, Array4};
use segmenter::patch3d::{canonical_input, sliding_window, Blending, Positions, Window};
use segmenter::preprocess::resample_trilinear;
use segmenter::select::select;
use segmenter::study::{parse_instance, Study};
use segmenter::volume::Volume;
use segmenter::{Manifest, Model};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The reference venv (torch CPU, monai, nnunetv2, onnxruntime); fails loudly when missing.
fn ref_python() -> PathBuf {
    let venv = std::env::var_os("SEGNODE_REF_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-ref"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the MONAI/nnU-Net reference venv {} is missing: run scripts/install-test-deps.sh \
         (or set SEGNODE_REF_VENV)",
        venv.display()
    );
    py
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_f32(path: &Path, data: impl Iterator<Item = f32>) {
    let bytes: Vec<u8> = data.flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs_diff<'a>(a: impl Iterator<Item = &'a f32>, b: &[f32]) -> f32 {
    a.zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A small synthetic study (64 x 64 pixels over 200 mm, 120 mm of slices) under `dir`/study, and its
/// DICOM files, sorted.
fn make_study(dir: &Path, args: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let study = dir.join("study");
    run(Command::new(testkit::python())
        .arg(root().join("models/synth/make_study.py"))
        .args([
            "--size",
            "64",
            "--fov",
            "200",
            "--coverage",
            "120",
            "--naming",
            "plain",
        ])
        .args(args)
        .arg("--out")
        .arg(&study));
    let mut files = testkit::files_under(&study.join("dicom"));
    files.sort();
    (study, files)
}

fn instances(files: &[PathBuf]) -> Vec<dicom_object::DefaultDicomObject> {
    files
        .iter()
        .map(|f| parse_instance(&std::fs::read(f).unwrap(), &f.display().to_string()).unwrap())
        .collect()
}

fn model() -> Model {
    Model::load(Manifest::load(&root().join("models/parity-patch3d")).unwrap())
        .unwrap()
        .with_slice_threads(2)
}

#[test]
fn sliding_window_equals_monai_and_nnunet_on_the_same_onnx() {
    let model = model();
    let sw = model.manifest().file.sliding_window.clone().unwrap();
    let p = sw.patch_size;
    assert_eq!(p, [32, 24, 16]);
    // [C, X, Y, Z]: longer than the patch on axes 0 and 1 (several overlapping windows, placed
    // differently by MONAI and nnU-Net), shorter on axis 2 (padding).
    let shape = (4usize, 60usize, 40usize, 12usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let image = Array4::from_shape_fn(shape, |(c, a, b, d)| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let smooth =
            ((a as f32 * 0.21 + c as f32).sin() + (b as f32 * 0.17).cos()) * (d as f32 * 0.3).sin();
        smooth + noise
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.f32");
    write_f32(&input, image.iter().copied());
    let out = dir.path().join("out");
    run(Command::new(ref_python())
        .arg(root().join("models/parity-patch3d/reference.py"))
        .arg("--onnx")
        .arg(&model.manifest().onnx_path)
        .arg("--input")
        .arg(&input)
        .args([
            "--shape",
            "4,60,40,12",
            "--patch",
            "32,24,16",
            "--classes",
            "3",
        ])
        .args([
            "--overlap",
            "0.5",
            "--sigma-scale",
            "0.125",
            "--step",
            "0.5",
        ])
        .arg("--out")
        .arg(&out));

    let win = |positions, blending, mirror_axes: Vec<usize>| Window {
        patch: p,
        positions,
        blending,
        mirror_axes,
    };
    let monai = Positions::Monai { overlap: 0.5 };
    let nnunet = Positions::Nnunet { step: 0.5 };
    let gauss = Blending::Gaussian { sigma_scale: 0.125 };
    // The largest |network output| seen (for the float16 bound below).
    let max_output = std::sync::atomic::AtomicU32::new(0);
    let ours = |w: &Window| -> Array4<f32> {
        sliding_window(image.view(), 3, w, model.threads(), |x| {
            let y = model.run_patch(x)?;
            let m = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            max_output.fetch_max(m.to_bits(), std::sync::atomic::Ordering::Relaxed);
            Ok::<_, segmenter::SegmentError>(y)
        })
        .unwrap()
    };
    let cases = [
        ("monai_constant", win(monai, Blending::Constant, vec![])),
        ("monai_gaussian", win(monai, gauss, vec![])),
        ("nnunet", win(nnunet, gauss, vec![])),
        ("nnunet_mirror", win(nnunet, gauss, vec![0, 1, 2])),
    ];
    let mut results = Vec::new();
    for (name, w) in &cases {
        let got = ours(w);
        assert_eq!(got.dim(), (3, 60, 40, 12));
        let theirs = read_f32(&out.join(format!("{name}.f32")));
        assert_eq!(theirs.len(), got.len(), "{name}");
        let d = max_abs_diff(got.iter(), &theirs);
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!("{name}: max |segnode - peer| = {d:.3e} (max |output| {scale:.3})");
        assert!(d <= 1e-4, "{name}: segnode differs from the peer by {d}");
        results.push(got);
    }
    // The comparison sees the blending and the mirroring (a wrong map or a skipped flip shows).
    let differ = |a: &Array4<f32>, b: &Array4<f32>| max_abs_diff(a.iter(), b.as_slice().unwrap());
    assert!(
        differ(&results[0], &results[1]) > 1e-2,
        "blending invisible"
    );
    assert!(
        differ(&results[1], &results[2]) > 1e-3,
        "window positions invisible"
    );
    assert!(
        differ(&results[2], &results[3]) > 1e-2,
        "mirroring invisible"
    );

    // nnU-Net 2.8.1 unmodified accumulates in float16 (unit roundoff u = 2^-11; subnormals below
    // 2^-14 are spaced 2^-24, so a rounded tiny value is off by <= 2^-25 absolute). Per voxel, with
    // W = the sum of the window weights there, M = the largest |network output| and at most 8 windows
    // (step 0.5 on 3 axes): the numerator's <= 8 rounded additions and products err by <= 8 u W M +
    // 8 x 2^-25, the weight sum's by <= 8 u W + 8 x 2^-25 (times M / W in the quotient), the weights'
    // own rounding to f16 (the same rounded weights on both sides) moves the weighted mean by <= (u W +
    // 8 x 2^-25) 2 M / W, the quotient's rounding by u M: |error| <= 19 u M + (8 + 24 M) 2^-25 / W.
    // The Gaussian's corners (e^-8 per axis, x 10) are far below 2^-14, hence the second term.
    let gauss_w = win(nnunet, gauss, vec![]);
    let padded = [60, 40, 16];
    let imp = gauss_w.importance();
    let mut weight = Array3::<f32>::zeros(padded);
    for st in segmenter::patch3d::windows(&gauss_w, padded).unwrap() {
        weight
            .slice_mut(ndarray::s![
                st[0]..st[0] + p[0],
                st[1]..st[1] + p[1],
                st[2]..st[2] + p[2]
            ])
            .zip_mut_with(&imp, |a, b| *a += b);
    }
    let weight = weight.slice(ndarray::s![.., .., 2..14]).to_owned();
    let m = max_output.load(std::sync::atomic::Ordering::Relaxed);
    let m = f32::from_bits(m);
    let u = (2f32).powi(-11);
    let tiny = (2f32).powi(-25);
    for (name, ours) in [
        ("nnunet_f16", &results[2]),
        ("nnunet_f16_mirror", &results[3]),
    ] {
        let theirs = read_f32(&out.join(format!("{name}.f32")));
        let mut worst = (0f32, 0f32);
        for ((idx, v), t) in ours.indexed_iter().zip(&theirs) {
            let w = weight[[idx.1, idx.2, idx.3]];
            let tol = 19.0 * u * m + (8.0 + 24.0 * m) * tiny / w;
            let d = (v - t).abs();
            assert!(d <= tol, "{name} at {idx:?}: {d} > {tol} (weight sum {w})");
            if d / tol > worst.0 / worst.1.max(f32::MIN_POSITIVE) {
                worst = (d, tol);
            }
        }
        println!(
            "{name}: within the float16 bound everywhere (tightest: {:.3e} of {:.3e}; M = {m:.2})",
            worst.0, worst.1
        );
    }
}

#[test]
fn canonical_grid_and_normalisation_equal_monais_chain_on_a_dicom_study() {
    let dir = tempfile::tempdir().unwrap();
    // Sagittal slices: the canonical (RAS) axes are a permutation of the DICOM axes, two flipped.
    let (study, files) = make_study(
        dir.path(),
        &[
            "--seed",
            "11",
            "--orientation",
            "sagittal",
            "--slice-thickness",
            "4",
        ],
    );
    let manifest = Manifest::load(&root().join("models/parity-patch3d")).unwrap();
    let mut file = manifest.file.clone();
    let spacing = [2.5, 3.0, 3.5];
    file.geometry.target_spacing_mm = Some(spacing);

    let st = Study::from_instances(instances(&files)).unwrap();
    let selection = select(&manifest, &st).unwrap();
    let volumes: Vec<Volume> = selection
        .series
        .iter()
        .map(|&s| Volume::from_series(&st.series[s]).unwrap())
        .collect();
    let grid = volumes[manifest.reference_channel].grid.clone();
    let on_ref: Vec<Array3<f32>> = volumes
        .iter()
        .map(|v| resample_trilinear(v.data.view(), &v.grid, &grid, 0.0))
        .collect();
    let (_, offset, ours) = canonical_input(&file, &on_ref, &grid).unwrap();
    assert_eq!(offset, [0, 0, 0]);

    // The same series folders, channel order (T1CE, T1, T2, FLAIR), through dcm2niix + MONAI.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("study.json")).unwrap()).unwrap();
    let folders: Vec<PathBuf> = selection
        .series
        .iter()
        .map(|&s| {
            let series = meta["series"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["series_instance_uid"] == st.series[s].uid.as_str())
                .expect("series in study.json");
            study.join(series["folder"].as_str().unwrap())
        })
        .collect();
    let out = dir.path().join("monai");
    let mut cmd = Command::new(ref_python());
    cmd.arg(root().join("models/parity-patch3d/reference_preprocess.py"))
        .arg("--series")
        .args(&folders)
        .args(["--axcodes", "RAS", "--pixdim", "2.5,3,3.5", "--out"])
        .arg(&out);
    run(&mut cmd);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("canonical.json")).unwrap())
            .unwrap();
    let shape: Vec<usize> = meta["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (c, a, b, d) = ours.dim();
    assert_eq!(
        shape,
        vec![c, a, b, d],
        "canonical shape (MONAI affine {})",
        meta["affine"]
    );
    let theirs = read_f32(&out.join("canonical.f32"));
    let diff = max_abs_diff(ours.iter(), &theirs);
    let mean_abs = ours.iter().map(|v| v.abs() as f64).sum::<f64>() / ours.len() as f64;
    println!(
        "canonical {c}x{a}x{b}x{d}: max |segnode - MONAI| = {diff:.3e} (z-score units; mean |x| {mean_abs:.3})"
    );
    // Tolerance, in z-score units (1 = one standard deviation of the channel's non-zero voxels):
    // MONAI reads the grid from the NIfTI affine, which dcm2niix stores as float32 (srow_*: relative
    // error <= 6e-8, i.e. <= 2e-5 mm over a 240 mm field, <= 1e-5 voxel at 2.5 mm); MONAI resamples
    // in float64 and takes mean and std in float32, segnode interpolates in f32 with f64 statistics.
    // Interpolated intensity errors of ~1e-5 voxel x the steepest gradient (a tissue edge: ~1 sd per
    // voxel) plus f32 rounding stay below 1e-4 sd; 1e-3 leaves a margin of 10 while a wrong axis,
    // flip, origin or spacing moves values by whole standard deviations.
    assert!(diff <= 1e-3, "max difference {diff} z-score units");
}

/// The parity model's manifest in a temporary folder with `edit` applied (and its ONNX beside it).
fn edited_model(dir: &Path, edit: impl Fn(String) -> String) -> Model {
    let src = root().join("models/parity-patch3d");
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(src.join("model.toml")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(dir.join("model.toml"), edited).unwrap();
    std::fs::copy(
        src.join("parity_patch3d.onnx"),
        dir.join("parity_patch3d.onnx"),
    )
    .unwrap();
    Model::load(Manifest::load(dir).unwrap())
        .unwrap()
        .with_slice_threads(2)
}

#[test]
fn a_patch3d_model_segments_a_study_and_brats_124_and_123_land_on_the_same_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = make_study(dir.path(), &["--seed", "12", "--slice-thickness", "5"]);
    let coarse = |t: String| {
        t.replace(
            "target_spacing_mm = [1.0, 1.0, 1.0]",
            "target_spacing_mm = [3.0, 3.0, 4.0]",
        )
    };
    // MONAI's convention (the shipped manifest): ET painted as 4.
    let m124 = edited_model(&dir.path().join("m124"), coarse);
    // nnU-Net's BraTS convention: the same channel painted as 3, the segment keyed by label 3.
    let m123 = edited_model(&dir.path().join("m123"), |t| {
        coarse(t)
            .replace("channel = 2\nlabel = 4\n", "channel = 2\nlabel = 3\n")
            .replace("labels = [1, 2, 4]", "labels = [1, 2, 3]")
            .replace("labels = [1, 4]", "labels = [1, 3]")
            .replace("labels = [4]", "labels = [3]")
            .replace("[[segments]]\nlabel = 4\n", "[[segments]]\nlabel = 3\n")
    });
    let load = || instances(&files);
    let settings = segmenter::SegSettings::segnode("test");
    let a = segmenter::segment_study(&m124, load(), "job-124", &settings).unwrap();
    let b = segmenter::segment_study(&m123, load(), "job-123", &settings).unwrap();
    let counts = segmenter::postprocess::label_counts(&a.labels);
    println!(
        "labels 1/2/4: {} / {} / {} voxels; inference {:?}",
        counts[1], counts[2], counts[4], a.timings.inference
    );
    assert!(a.labels.iter().all(|l| [0, 1, 2, 4].contains(l)));
    assert!(b.labels.iter().all(|l| [0, 1, 2, 3].contains(l)));
    assert!(
        [1, 2, 4].iter().filter(|&&l| counts[l] > 0).count() >= 2,
        "the random net paints at least two labels here, so the mapping is seen: {:?}",
        &counts[..5]
    );
    assert_eq!(b.labels, a.labels.mapv(|l| if l == 4 { 3 } else { l }));
    // Same segments (names, codes through the manifest), same volumes, same regions.
    for (x, y) in a.segments.iter().zip(&b.segments) {
        assert_eq!((&x.name, x.voxels), (&y.name, y.voxels));
    }
    assert_eq!(a.segments[2].name, "Enhancing tumour");
    assert_eq!(a.segments[2].voxels, counts[4]);
    for (x, y) in a.regions.iter().zip(&b.regions) {
        assert_eq!((&x.name, x.voxels), (&y.name, y.voxels));
    }
    assert_eq!(a.seg_frames, b.seg_frames);
}
