//! NIfTI in, NIfTI out (issue 18): the synthetic generator writes one study as DICOM and as
//! NIfTI (models/synth/make_study.py --nifti --nifti-4d, the same pixel values and geometry); the
//! DICOM path (segment_study) and the NIfTI path (segment_case) must give identical labels, with
//! both BraTS namings, a 4D file, a big-endian NIfTI-2 file, a qform-only file, a file whose
//! qform disagrees with its sform (sform wins, as in nibabel) and a file stored in another voxel
//! order. nibabel (the peers venv) writes the variants and reads our label map back with the
//! input's affine. Bad cases fail with their reason and are permanent errors (the worker
//! dead-letters them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ndarray::Array3;
use segmenter::nifti_case::{output_values, segment_case, CaseFile, NiftiOutcome};
use segmenter::study::parse_instance;
use segmenter::{segment_study, Manifest, Model, SegSettings, SegmentError};

const CASE: &str = "BraTS-GLI-00007-000";

fn root() -> PathBuf {
    testkit::workspace_root()
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load(Manifest::load(&root().join("models/brats-synth-unet2d")).unwrap()).unwrap()
    })
}

/// The generated study (DICOM + NIfTI, 128 x 128 x 57 at 1.875 x 1.875 x 3 mm), made once.
fn study() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        testkit::stdout_of(
            Command::new(testkit::python())
                .arg(root().join("models/synth/make_study.py"))
                .args(["--seed", "7", "--size", "128", "--nifti", "brats2023"])
                .arg("--nifti-4d")
                .arg("--out")
                .arg(dir.path()),
        );
        dir
    })
    .path()
}

fn nifti_dir() -> PathBuf {
    study().join("nifti").join(CASE)
}

fn case_files(dir: &Path) -> Vec<CaseFile> {
    let mut files: Vec<CaseFile> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            CaseFile {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            }
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

fn default_values() -> [u8; 256] {
    output_values(model().manifest(), None).unwrap()
}

fn run_case(dir: &Path) -> Result<NiftiOutcome, SegmentError> {
    segment_case(model(), CASE, &case_files(dir), &default_values())
}

/// The DICOM path's labels on the FLAIR grid (slices ascending along the normal, which for the
/// generated axial stack is the NIfTI file's k order), made once.
fn dicom_labels() -> &'static Array3<u8> {
    static L: OnceLock<Array3<u8>> = OnceLock::new();
    L.get_or_init(|| {
        let files = testkit::files_under(&study().join("dicom"));
        let instances = files
            .iter()
            .map(|f| parse_instance(&std::fs::read(f).unwrap(), &f.display().to_string()).unwrap())
            .collect();
        let out = segment_study(
            model(),
            instances,
            "nifti-parity",
            &SegSettings::segnode("test"),
        )
        .unwrap();
        out.labels
    })
}

/// Runs a nibabel snippet in the peers venv with `argv[1:]` = `args`.
fn nibabel(script: &str, args: &[&Path]) {
    testkit::stdout_of(
        Command::new(testkit::python())
            .args(["-c", script])
            .args(args),
    );
}

/// A copy of the NIfTI case folder in `dir`, T2 (`-t2w`) rewritten by `edit` (Python: `img` is
/// the loaded image, the result is saved over it).
fn variant(dir: &Path, edit: &str) -> PathBuf {
    let out = dir.join(CASE);
    std::fs::create_dir_all(&out).unwrap();
    for f in case_files(&nifti_dir()) {
        std::fs::copy(&f.path, out.join(&f.name)).unwrap();
    }
    let t2 = out.join(format!("{CASE}-t2w.nii.gz"));
    nibabel(
        &format!(
            "import sys, numpy as np, nibabel as nib\nimg = nib.load(sys.argv[1])\n{edit}\nnib.save(img, sys.argv[1])"
        ),
        &[&t2],
    );
    out
}

fn tumour_voxels(l: &Array3<u8>) -> usize {
    l.iter().filter(|&&v| v != 0).count()
}

#[test]
fn dicom_and_nifti_give_identical_labels_and_nibabel_reads_the_input_affine() {
    let dicom = dicom_labels();
    assert!(
        tumour_voxels(dicom) > 1000,
        "the DICOM path found no tumour"
    );
    let out = run_case(&nifti_dir()).unwrap();
    assert_eq!(
        out.chosen,
        [
            ("T1", "-t1n"),
            ("T1CE", "-t1c"),
            ("T2", "-t2w"),
            ("FLAIR", "-t2f")
        ]
        .map(|(c, s)| (c.to_string(), format!("{CASE}{s}.nii.gz")))
    );
    assert_eq!(&out.labels, dicom, "NIfTI and DICOM labels differ");
    assert_eq!(out.seg_name, format!("{CASE}_seg.nii.gz"));

    // volumes.json: the voxel counts of the labels, the model, the inputs.
    let v: serde_json::Value = serde_json::from_slice(&out.volumes_json).unwrap();
    assert_eq!(v["model"]["name"], "brats-synth-unet2d");
    assert_eq!(v["input"]["case"], CASE);
    assert_eq!(
        v["input"]["channels"]["FLAIR"],
        format!("{CASE}-t2f.nii.gz")
    );
    for (s, label) in v["segments"].as_array().unwrap().iter().zip([1u8, 2, 3]) {
        let n = dicom.iter().filter(|&&x| x == label).count();
        assert_eq!(s["voxels"], n, "{s}");
        assert_eq!(s["value"], label);
    }
    let wt = &v["regions"][0];
    assert_eq!(wt["name"], "WT");
    assert_eq!(wt["voxels"], tumour_voxels(dicom));
    assert!(
        (wt["ml"].as_f64().unwrap() - tumour_voxels(dicom) as f64 * 1.875 * 1.875 * 3.0 / 1000.0)
            .abs()
            < 1e-6
    );
    assert!(v["timings_s"]["inference"].as_f64().unwrap() > 0.0);

    // nibabel reads our map with the FLAIR file's affine and shape, voxel for voxel the labels.
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(&out.seg_name);
    std::fs::write(&seg, &out.seg_nii_gz).unwrap();
    let raw = dir.path().join("labels.u8");
    std::fs::write(&raw, dicom.as_slice().unwrap()).unwrap();
    let flair = nifti_dir().join(format!("{CASE}-t2f.nii.gz"));
    nibabel(
        "import sys, numpy as np, nibabel as nib
o, i = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert o.shape == i.shape, (o.shape, i.shape)
assert np.allclose(o.affine, i.affine, atol=1e-5), (o.affine, i.affine)
assert o.get_data_dtype() == np.uint8
want = np.fromfile(sys.argv[3], np.uint8).reshape(i.shape[::-1]).transpose(2, 1, 0)
got = np.asarray(o.dataobj)
assert np.array_equal(got, want), int((got != want).sum())
assert set(np.unique(got)) <= {0, 1, 2, 3}, np.unique(got)",
        &[&seg, &flair, &raw],
    );
}

#[test]
fn a_4d_file_and_the_brats_2021_names_give_the_same_labels() {
    let dicom = dicom_labels();
    let four_d = run_case(&study().join("nifti4d").join(CASE)).unwrap();
    assert_eq!(&four_d.labels, dicom);
    assert_eq!(four_d.chosen[0].1, format!("{CASE}.nii.gz"));

    // BraTS 2018-2021 names, and their label values: enhancing tumour written as 4.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("BraTS2021_00007");
    std::fs::create_dir_all(&old).unwrap();
    for (new, was) in [
        ("t1", "t1n"),
        ("t1ce", "t1c"),
        ("t2", "t2w"),
        ("flair", "t2f"),
    ] {
        std::fs::copy(
            nifti_dir().join(format!("{CASE}-{was}.nii.gz")),
            old.join(format!("BraTS2021_00007_{new}.nii.gz")),
        )
        .unwrap();
    }
    let values = output_values(model().manifest(), Some(&[1, 2, 4])).unwrap();
    let out = segment_case(model(), "BraTS2021_00007", &case_files(&old), &values).unwrap();
    assert_eq!(&out.labels, dicom);
    let written = segmenter::nifti::read(&out.seg_nii_gz).unwrap();
    let want = dicom.mapv(|l| [0u8, 1, 2, 4][l as usize] as f32);
    assert_eq!(written.volumes[0], want);
    let v: serde_json::Value = serde_json::from_slice(&out.volumes_json).unwrap();
    assert_eq!(v["segments"][2]["label"], 3);
    assert_eq!(v["segments"][2]["value"], 4);
}

#[test]
fn geometry_comes_from_the_sform_then_the_qform_in_any_voxel_order() {
    let dicom = dicom_labels();
    let shifted = "a = img.affine.copy(); a[0, 3] += 20.0";
    // (what, the T2 edit, Some(voxels that may differ) or None: must differ)
    for (what, edit, tolerance) in [
        (
            "qform 20 mm off, sform right: the sform wins",
            format!("{shifted}\nimg.set_qform(a, code=1)"),
            Some(0),
        ),
        (
            "NIfTI-2 (nibabel Nifti2Image: 540-byte header, 64-bit dims), big-endian float32",
            "h = img.header.copy()
img = nib.Nifti2Image(np.asarray(img.dataobj), img.affine, header=nib.Nifti2Header(endianness='>'))
img.set_sform(h.get_sform(), code=1); img.set_qform(h.get_qform(), code=1)
img.set_data_dtype('>f4')
assert img.header['sizeof_hdr'] == 540 and img.header.endianness == '>', img.header"
                .to_string(),
            Some(0),
        ),
        (
            "no sform, qform right",
            "img.set_sform(None, code=0)".to_string(),
            Some(0),
        ),
        (
            "stored flipped along i (a left-handed voxel frame), the affine moved with it",
            // (nibabel 5.4's slicer[::-1] keeps the old origin: it mirrors the image.)
            "a = img.affine.copy(); a[:3, 3] += a[:3, 0] * (img.shape[0] - 1); a[:3, 0] *= -1
img = nib.Nifti1Image(np.asarray(img.dataobj)[::-1], a, img.header)
img.set_sform(a, code=1); img.set_qform(a, code=1)"
                .to_string(),
            Some(0),
        ),
        (
            "sform 20 mm off: T2 is resampled 20 mm away (the geometry is used)",
            format!("{shifted}\nimg.set_sform(a, code=1)"),
            None,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_case(&variant(dir.path(), &edit)).unwrap();
        let differing = out
            .labels
            .iter()
            .zip(dicom.iter())
            .filter(|(a, b)| a != b)
            .count();
        eprintln!("{what}: {differing} voxels differ from the DICOM path");
        match tolerance {
            Some(n) => assert!(differing <= n, "{what}: {differing} voxels differ"),
            None => assert!(differing > 100, "{what}: only {differing} voxels differ"),
        }
    }
}

#[test]
fn bad_cases_fail_permanently_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let check = |case_dir: &Path, says: &str| {
        let e = run_case(case_dir).unwrap_err();
        assert!(e.is_permanent(), "{e}");
        assert!(e.to_string().contains(says), "{e}\nshould say {says:?}");
    };
    let t2 = |d: &Path| d.join(format!("{CASE}-t2w.nii.gz"));

    // Broken header: the file holds a header whose magic is wrong.
    let d = variant(&dir.path().join("magic"), "");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(t2(&d)).unwrap()),
        &mut raw,
    )
    .unwrap();
    raw[344..348].copy_from_slice(b"xx1\0");
    std::fs::write(t2(&d), &raw).unwrap();
    check(&d, "magic");

    // Truncated: the data ends before the header's dimensions say.
    let d = variant(&dir.path().join("truncated"), "");
    raw[344..348].copy_from_slice(b"n+1\0");
    std::fs::write(t2(&d), &raw[..raw.len() / 2]).unwrap();
    check(&d, "truncated, or dimensions that do not match the data");

    // Same affine, one slice fewer (cropped without updating the affine).
    let d = variant(&dir.path().join("cropped"), "img = img.slicer[:, :, :-1]");
    check(&d, "same affine");

    // A missing contrast.
    let d = variant(&dir.path().join("missing"), "");
    std::fs::remove_file(d.join(format!("{CASE}-t1c.nii.gz"))).unwrap();
    check(&d, "missing NIfTI input(s): T1CE");

    // A 4D file with three volumes.
    let d = dir.path().join("three").join(CASE);
    std::fs::create_dir_all(&d).unwrap();
    let four = study()
        .join("nifti4d")
        .join(CASE)
        .join(format!("{CASE}.nii.gz"));
    nibabel(
        "import sys, nibabel as nib\nnib.save(nib.load(sys.argv[1]).slicer[..., :3], sys.argv[2])",
        &[&four, &d.join("case.nii.gz")],
    );
    check(&d, "holds 3 volume(s); the model needs 4");

    // A file that is not NIfTI beside the NIfTI files, and one named .nii.gz that is not.
    let d = variant(&dir.path().join("pdf"), "");
    std::fs::write(d.join("report.pdf"), b"%PDF-1.4").unwrap();
    check(&d, "report.pdf: is not a NIfTI file");
    std::fs::remove_file(d.join("report.pdf")).unwrap();
    std::fs::write(t2(&d), b"%PDF-1.4 renamed").unwrap();
    check(&d, "not a NIfTI file");
}
