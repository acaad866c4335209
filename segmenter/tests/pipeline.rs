//! The whole pipeline on the committed synthetic studies (testdata/studies): series matched, pixels
//! decoded (RLE, JPEG-LS), resampled, segmented by the shipped model, and the labels compared with the
//! ground truth. The model card's figures for these two studies (Python + onnxruntime, same
//! preprocessing) are the floor: geometry or preprocessing that drifts shows up as lost Dice.

use std::path::{Path, PathBuf};

use ndarray::Array3;
use segmenter::postprocess::dice;
use segmenter::study::parse_instance;
use segmenter::{segment_study, Manifest, Model, SegSettings};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> Model {
    Model::load(Manifest::load(&root().join("models/brats-synth-unet2d")).unwrap()).unwrap()
}

fn instances(study: &Path) -> Vec<dicom_object::DefaultDicomObject> {
    let mut files = testkit::files_under(&study.join("dicom"));
    files.sort();
    files
        .iter()
        .map(|f| parse_instance(&std::fs::read(f).unwrap(), &f.display().to_string()).unwrap())
        .collect()
}

/// Ground-truth labels, re-ordered like the outcome's slices (by SOP Instance UID).
fn truth(study: &Path, slice_sources: &[(String, Option<u32>)]) -> Array3<u8> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("truth/truth.json")).unwrap())
            .unwrap();
    let shape: Vec<usize> = meta["raw_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let raw = std::fs::read(study.join("truth").join(meta["raw_file"].as_str().unwrap())).unwrap();
    let raw = Array3::from_shape_vec((shape[0], shape[1], shape[2]), raw).unwrap();
    let uids: Vec<&str> = meta["reference_sop_instance_uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut out = Array3::<u8>::zeros(raw.dim());
    for (k, (sop, _)) in slice_sources.iter().enumerate() {
        let src = uids.iter().position(|u| u == sop).expect("slice in truth");
        out.index_axis_mut(ndarray::Axis(0), k)
            .assign(&raw.index_axis(ndarray::Axis(0), src));
    }
    out
}

/// (WT, TC, ET) from the model card (models/brats-synth-unet2d/eval_test_studies.json), rounded down.
fn card_floor(name: &str) -> [f64; 3] {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/brats-synth-unet2d/eval_test_studies.json"))
            .unwrap(),
    )
    .unwrap();
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().ends_with(name))
        .unwrap();
    ["WT", "TC", "ET"].map(|r| (case[r].as_f64().unwrap() * 1000.0).floor() / 1000.0)
}

fn check_study(name: &str) {
    let dir = root().join("testdata/studies").join(name);
    let out = segment_study(
        &model(),
        instances(&dir),
        &format!("test-{name}"),
        &SegSettings::segnode("test"),
    )
    .unwrap();
    let gt = truth(&dir, &out.slice_sources);
    assert_eq!(out.labels.dim(), gt.dim());
    let got = [
        dice(&out.labels, &gt, &[1, 2, 3]),
        dice(&out.labels, &gt, &[1, 3]),
        dice(&out.labels, &gt, &[3]),
    ];
    let floor = card_floor(name);
    eprintln!(
        "{name}: Dice WT {:.4} TC {:.4} ET {:.4} (model card {floor:?}); chosen {:?}; timings {:?}; {} components removed",
        got[0], got[1], got[2],
        out.chosen.iter().map(|c| (&c.channel, &c.summary)).collect::<Vec<_>>(),
        out.timings, out.components_removed
    );
    for (r, (g, f)) in ["WT", "TC", "ET"].iter().zip(got.iter().zip(floor)) {
        assert!(
            *g >= f,
            "{name}: Dice {r} {g:.4} below the model card's {f}"
        );
    }
    // The channels went to the right series.
    let chosen: Vec<(&str, &str)> = out
        .chosen
        .iter()
        .map(|c| (c.channel.as_str(), c.summary.as_str()))
        .collect();
    assert!(chosen[3].1.contains("FLAIR"), "{chosen:?}");
    assert!(
        chosen[1].1.contains("POST") || chosen[1].1.contains("T1CE"),
        "{chosen:?}"
    );
    // The SEG reads back onto the same slices with the same labels.
    let back = dicom_seg::ReadSegmentation::from_bytes(&out.seg).unwrap();
    assert_eq!(back.segments.len(), 3);
    assert_eq!(
        out.seg_sop_instance_uid,
        dicom_seg::Uid::derived_from(&format!("test-{name}")).to_string()
    );
    let total: usize = out.segments.iter().map(|s| s.voxels).sum();
    assert!(total > 0);
}

#[test]
fn axial_rle_study_matches_truth() {
    check_study("synth-007-axial-rle");
}

#[test]
fn oblique_jpegls_study_matches_truth() {
    check_study("synth-042-oblique-jpegls");
}

/// A FLAIR slice lost in transit: the study is refused with a message that says so, permanently.
#[test]
fn a_missing_slice_is_a_clear_permanent_error() {
    let dir = root().join("testdata/studies/synth-007-axial-rle");
    let mut all = instances(&dir);
    let flair_uid = "2.25.56281463486819709945257946676503405164";
    let victim = all
        .iter()
        .position(|o| {
            let series = o
                .get(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches('\0').to_string());
            let n = o
                .get(dicom_dictionary_std::tags::INSTANCE_NUMBER)
                .and_then(|e| e.to_int::<i32>().ok());
            series.as_deref() == Some(flair_uid) && n == Some(10)
        })
        .expect("FLAIR slice 10");
    all.remove(victim);
    let err = segment_study(&model(), all, "gap", &SegSettings::segnode("test")).unwrap_err();
    let text = err.to_string();
    assert!(err.is_permanent(), "{text}");
    assert!(text.contains(flair_uid), "{text}");
    assert!(text.contains("1 slice(s) missing"), "{text}");
}

/// JPEG-LS is decoded in pure Rust (segmenter::jpeg_ls): an MR image compressed by dcmtk's dcmcjpls
/// decodes to exactly the uncompressed pixels (lossless), and within NEAR of them (near-lossless,
/// transfer syntax .81), through the same path the worker uses.
#[test]
fn jpeg_ls_decodes_like_dcmtk_encoded_it() {
    use dicom_pixeldata::PixelDecoder;
    let dir = tempfile::tempdir().unwrap();
    let src = testkit::files_under(&root().join("testdata/studies/synth-007-axial-rle/dicom"))
        .into_iter()
        .min()
        .unwrap();
    let native = dir.path().join("native.dcm");
    let run = |tool: &str, args: &[&str]| {
        let o = std::process::Command::new(testkit::require_tool(tool))
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        "dcmdrle",
        &[src.to_str().unwrap(), native.to_str().unwrap()],
    );
    let pixels = |path: &Path| -> (String, Vec<f32>) {
        let obj = parse_instance(&std::fs::read(path).unwrap(), "test").unwrap();
        let ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let obj = if segmenter::jpeg_ls::is_jpeg_ls(&ts) {
            segmenter::jpeg_ls::to_native(&obj).unwrap()
        } else {
            obj
        };
        let d = obj.decode_pixel_data().unwrap();
        (ts, d.to_vec_frame::<f32>(0).unwrap())
    };
    let (_, reference) = pixels(&native);
    assert!(reference.iter().any(|&v| v > 0.0), "blank test image");

    let lossless = dir.path().join("lossless.dcm");
    run(
        "dcmcjpls",
        &[native.to_str().unwrap(), lossless.to_str().unwrap()],
    );
    let (ts, decoded) = pixels(&lossless);
    assert_eq!(ts, segmenter::jpeg_ls::JPEG_LS_LOSSLESS);
    assert_eq!(decoded, reference);

    let near = dir.path().join("near.dcm");
    run(
        "dcmcjpls",
        &[
            "+en",
            "+md",
            "3",
            native.to_str().unwrap(),
            near.to_str().unwrap(),
        ],
    );
    let (ts, decoded) = pixels(&near);
    assert_eq!(ts, segmenter::jpeg_ls::JPEG_LS_NEAR_LOSSLESS);
    let worst = decoded
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 3.0, "near-lossless error {worst} > NEAR 3");
    assert!(
        decoded != reference,
        "near-lossless decoded exactly: was NEAR applied?"
    );
}
