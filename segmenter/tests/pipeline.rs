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
