//! The whole pipeline on the committed synthetic studies (testdata/studies): series matched, pixels
//! decoded (RLE, JPEG-LS), resampled, segmented by the shipped model, and the labels compared with the
//! ground truth. The model card's figures for these two studies (Python + onnxruntime, same
//! preprocessing) are the floor: geometry or preprocessing that drifts shows up as lost Dice.

use std::path::Path;

use ndarray::Array3;
use segmenter::postprocess::dice;
use segmenter::study::parse_instance;
use segmenter::truth::GroundTruth;
use segmenter::{segment_study, Manifest, Model, SegSettings};

use crate::common::root;

fn model() -> Model {
    crate::common::shipped_model()
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
    truth_file(study, slice_sources, "raw_file")
}

/// A raw truth file named by truth.json's `key` (raw_file: labels, brain_file: brain mask), re-ordered
/// like the outcome's slices (segmenter::truth, the reader `segnode demo` uses too).
fn truth_file(
    study: &Path,
    slice_sources: &[(String, Option<u32>)],
    key: &'static str,
) -> Array3<u8> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("truth/truth.json")).unwrap())
            .unwrap();
    let shape: Vec<usize> = meta["raw_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let sops: Vec<&str> = slice_sources.iter().map(|(sop, _)| sop.as_str()).collect();
    GroundTruth::open(study)
        .unwrap()
        .expect("truth/truth.json")
        .volume(key, &sops, shape[1], shape[2])
        .unwrap()
        .expect("slice in truth")
}

/// The figures a model card gives for one committed study (models/<model>/eval_test_studies.json).
fn card_case(model: &str, name: &str) -> serde_json::Value {
    let path = root()
        .join("models")
        .join(model)
        .join("eval_test_studies.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()))
        .clone()
}

/// (WT, TC, ET, brain) from the 2D model's card, rounded down to 3 decimals.
fn card_floor(name: &str) -> [f64; 4] {
    let case = card_case("brats-synth-unet2d", name);
    ["WT", "TC", "ET", "brain_dice"].map(|r| (case[r].as_f64().unwrap() * 1000.0).floor() / 1000.0)
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
    // The brain-extraction stage: a mask as good as the card says, its volume reported, no tumour
    // label outside it.
    let mask = out
        .brain_mask
        .as_ref()
        .expect("the shipped model extracts the brain");
    let brain_gt = truth_file(&dir, &out.slice_sources, "brain_file");
    let brain_dice = dice(mask, &brain_gt, &[1]);
    let brain_ml = out.brain_ml.expect("brain volume reported");
    eprintln!("{name}: brain Dice {brain_dice:.4}, {brain_ml:.0} mL");
    assert!(
        brain_dice >= floor[3],
        "{name}: brain Dice {brain_dice:.4} below the model card's {}",
        floor[3]
    );
    let voxels = mask.iter().filter(|&&m| m == 1).count();
    assert!((brain_ml - voxels as f64 * out.grid.voxel_ml()).abs() < 1e-6);
    let outside = ndarray::Zip::from(&out.labels)
        .and(mask)
        .fold(0usize, |n, &l, &m| n + usize::from(l != 0 && m == 0));
    assert_eq!(outside, 0, "{name}: tumour labels outside the brain mask");
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

/// Heads with skull, scalp, eyes, sinuses and neck (issue 14): the brain-extraction stage strips them.
#[test]
fn head_axial_rle_study_matches_truth() {
    check_study("synth-007-head-axial-rle");
}

#[test]
fn head_coronal_jpegls_study_matches_truth() {
    check_study("synth-042-head-coronal-jpegls");
}

/// The second shipped model, `models/brats-synth-segresnet3d` (3D SegResNet, patch3d, MONAI BraTS
/// conventions: sigmoid TC/WT/ET painted as labels 1/2/4), on a committed head study: brain extraction,
/// the canonical 2 mm grid, one sliding window, probabilities back onto the FLAIR grid. Its Dice must
/// reach the model card's figures for this study (models/brats-synth-segresnet3d/eval_test_studies.json,
/// Python + onnxruntime + MONAI's sliding_window_inference on the same manifest, models/eval3d.py),
/// rounded down to 3 decimals like the 2D model's: the Rust path equals that reference to 4 decimals.
#[test]
fn segresnet3d_segments_a_head_study_like_its_card() {
    let name = "synth-007-head-axial-rle";
    let dir = root().join("testdata/studies").join(name);
    let model = crate::common::segresnet3d_model();
    let out = segment_study(
        &model,
        instances(&dir),
        &format!("test3d-{name}"),
        &SegSettings::segnode("test"),
    )
    .unwrap();
    assert!(
        out.labels.iter().all(|l| [0, 1, 2, 4].contains(l)),
        "BraTS labels 1/2/4 only"
    );
    // Truth uses 3 for enhancing; the model paints MONAI's 4.
    let labels = out.labels.mapv(|l| if l == 4 { 3 } else { l });
    let gt = truth(&dir, &out.slice_sources);
    let got = [
        dice(&labels, &gt, &[1, 2, 3]),
        dice(&labels, &gt, &[1, 3]),
        dice(&labels, &gt, &[3]),
    ];
    let case = card_case("brats-synth-segresnet3d", name);
    eprintln!(
        "{name} (3D): Dice WT {:.4} TC {:.4} ET {:.4} (card {} / {} / {}); timings {:?}",
        got[0], got[1], got[2], case["WT"], case["TC"], case["ET"], out.timings
    );
    for (r, g) in ["WT", "TC", "ET"].iter().zip(got) {
        let floor = (case[r].as_f64().unwrap() * 1000.0).floor() / 1000.0;
        assert!(
            g >= floor,
            "{name}: 3D Dice {r} {g:.4} below the card's {floor:.4}"
        );
    }
    // The brain-extraction stage ran first, and no tumour label lies outside its mask.
    let mask = out
        .brain_mask
        .as_ref()
        .expect("the 3D model extracts the brain");
    let outside = ndarray::Zip::from(&out.labels)
        .and(mask)
        .fold(0usize, |n, &l, &m| n + usize::from(l != 0 && m == 0));
    assert_eq!(outside, 0, "tumour labels outside the brain mask");
    // The SEG carries the three segments keyed by 1/2/4 and reads back onto the same labels.
    let back = dicom_seg::ReadSegmentation::from_bytes(&out.seg).unwrap();
    assert_eq!(back.segments.len(), 3);
    let names: Vec<&str> = out.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Necrotic core", "Oedema", "Enhancing tumour"]);
}

/// The shipped manifest with `[brain_extraction]` edited by `edit`, in a folder of its own (the ONNX
/// file copied beside it, the brain model referenced by absolute path).
fn edited_model(edit: impl Fn(String) -> String) -> (tempfile::TempDir, Model) {
    let shipped = root().join("models/brats-synth-unet2d");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped.join("model.toml")).unwrap();
    let brain = root().join("models/brain-mask-synth");
    let text = text.replace(
        "model = \"../brain-mask-synth\"",
        &format!("model = {:?}", brain.display().to_string()),
    );
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(dir.path().join("model.toml"), edited).unwrap();
    std::fs::copy(
        shipped.join("brats_synth_unet2d.onnx"),
        dir.path().join("brats_synth_unet2d.onnx"),
    )
    .unwrap();
    let model = Model::load(Manifest::load(dir.path()).unwrap()).unwrap();
    (dir, model)
}

/// A brain outside the manifest's plausible volume fails the job permanently, with the volume and
/// the range in the reason: never a silent wrong SEG.
#[test]
fn an_implausible_brain_volume_is_a_permanent_failure() {
    let (_dir, model) =
        edited_model(|t| t.replace("brain_ml = [800.0, 3000.0]", "brain_ml = [100.0, 500.0]"));
    let dir = root().join("testdata/studies/synth-007-head-axial-rle");
    let err = segment_study(
        &model,
        instances(&dir),
        "small",
        &SegSettings::segnode("test"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(err.is_permanent(), "{text}");
    assert!(text.contains("implausible brain volume"), "{text}");
    assert!(text.contains("100-500 mL"), "{text}");
}

/// A mask with too much of its surface on the volume's edge fails permanently: here a slab of 8
/// slices (40 mm) through the middle of a head, every series cut the same way, so the brain fills the
/// stack from its first slice to its last (55 % of the true mask's surface is on the edge). The volume
/// rule is widened so that the edge rule decides, and its threshold lowered to 30 % to keep the test
/// clear of the shipped 50 %, which a slab like this exceeds only just.
#[test]
fn a_mask_on_the_volume_edge_is_a_permanent_failure() {
    let (_dir, model) = edited_model(|t| {
        t.replace("brain_ml = [800.0, 3000.0]", "brain_ml = [1.0, 5000.0]")
            .replace("max_edge_fraction = 0.5", "max_edge_fraction = 0.3")
    });
    let dir = root().join("testdata/studies/synth-007-head-axial-rle");
    let slab: Vec<_> = instances(&dir)
        .into_iter()
        .filter(|o| {
            let n = o
                .get(dicom_dictionary_std::tags::INSTANCE_NUMBER)
                .and_then(|e| e.to_int::<i32>().ok())
                .unwrap();
            (17..=24).contains(&n)
        })
        .collect();
    assert_eq!(slab.len(), 4 * 8);
    let err = segment_study(&model, slab, "edge", &SegSettings::segnode("test")).unwrap_err();
    let text = err.to_string();
    assert!(err.is_permanent(), "{text}");
    assert!(text.contains("lies on the edge of the volume"), "{text}");
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

/// One instance cut in transit (an edge slice of T2) and one hostile object (a nesting bomb)
/// among the study's files: both are left out, the series stays usable (no gap in the middle),
/// and the study is segmented rather than dead-lettered.
#[test]
fn unreadable_instances_are_left_out_when_the_series_stays_usable() {
    let dir = root().join("testdata/studies/synth-007-axial-rle");
    let mut files = testkit::files_under(&dir.join("dicom"));
    files.sort();
    let mut fetched: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
        .collect();
    let total = fetched.len();
    let edge = fetched
        .iter_mut()
        .find(|(name, _)| name.ends_with("03_T2/IM_0001.dcm"))
        .expect("T2 slice 1");
    let keep = edge.1.len() - 100;
    edge.1.truncate(keep);
    let mut bomb = fetched[0].1[..132].to_vec();
    bomb.truncate(128);
    bomb.extend_from_slice(b"DICM");
    // file meta: Transfer Syntax UID only, then 10,000 nested sequences
    bomb.extend_from_slice(&[0x02, 0, 0x10, 0, b'U', b'I', 18, 0]);
    bomb.extend_from_slice(b"1.2.840.10008.1.2\0");
    for _ in 0..10_000 {
        bomb.extend_from_slice(&[0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        bomb.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    fetched.push(("bomb.dcm".into(), bomb));

    let (instances, unreadable) = segmenter::worker::parse_readable(&fetched).unwrap();
    assert_eq!(instances.len(), total - 1);
    assert_eq!(unreadable.len(), 2, "{unreadable:?}");
    assert!(unreadable.iter().any(|n| n.ends_with("03_T2/IM_0001.dcm")));
    let out = segment_study(&model(), instances, "edge", &SegSettings::segnode("test"))
        .expect("the study is segmented without the unreadable instances");
    assert!(!out.seg.is_empty());

    // nothing readable at all: an error, not an empty study
    let only_bad = vec![("bomb.dcm".to_string(), fetched.pop().unwrap().1)];
    let err = segmenter::worker::parse_readable(&only_bad).unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("nested"),
        "{err}"
    );
}
