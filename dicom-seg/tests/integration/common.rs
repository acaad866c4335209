//! Shared test support: deterministic synthetic MR series (no patient data), the masks drawn on them,
//! and helpers to run the real peer tools (dicom3tools, dcmtk, highdicom, dcmqi, Orthanc).

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_seg::*;
use ndarray::Array3;
use std::path::{Path, PathBuf};
use std::process::Command;

pub type Obj = InMemDicomObject;
pub type File = FileDicomObject<Obj>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Axial,
    Sagittal,
    Coronal,
    Oblique,
}

impl Plane {
    /// Row and column direction cosines.
    pub fn orientation(self) -> [f64; 6] {
        match self {
            Plane::Axial => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            Plane::Sagittal => [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
            Plane::Coronal => [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            Plane::Oblique => {
                // Axial tilted 20 degrees about x, then rotated 15 degrees about z.
                let (a, b) = (20f64.to_radians(), 15f64.to_radians());
                let rot = |v: [f64; 3]| {
                    let v1 = [
                        v[0],
                        v[1] * a.cos() - v[2] * a.sin(),
                        v[1] * a.sin() + v[2] * a.cos(),
                    ];
                    [
                        v1[0] * b.cos() - v1[1] * b.sin(),
                        v1[0] * b.sin() + v1[1] * b.cos(),
                        v1[2],
                    ]
                };
                let r = rot([1.0, 0.0, 0.0]);
                let c = rot([0.0, 1.0, 0.0]);
                // Round to what a scanner writes (DS, 8 decimals), keeping vectors unit within 1e-7.
                let q = |x: f64| (x * 1e8).round() / 1e8;
                [q(r[0]), q(r[1]), q(r[2]), q(c[0]), q(c[1]), q(c[2])]
            }
        }
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn put(o: &mut Obj, tag: Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}
fn put_u16(o: &mut Obj, tag: Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}
fn put_seq(o: &mut Obj, tag: Tag, items: Vec<Obj>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}
fn ds(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x}"))
        .collect::<Vec<_>>()
        .join("\\")
}

/// Description of a synthetic acquisition.
#[derive(Debug, Clone)]
pub struct Acq {
    pub name: &'static str,
    pub plane: Plane,
    pub slices: usize,
    pub rows: u16,
    pub cols: u16,
    pub spacing: [f64; 2],
    pub slice_step: f64,
    pub clinical_trial: bool,
}

impl Acq {
    pub fn new(name: &'static str, plane: Plane, slices: usize, rows: u16, cols: u16) -> Self {
        Acq {
            name,
            plane,
            slices,
            rows,
            cols,
            spacing: [0.9375, 1.25],
            slice_step: 2.5,
            clinical_trial: false,
        }
    }
    fn uid(&self, what: &str) -> String {
        Uid::derived_from(&format!("dicom-seg test {} {what}", self.name)).to_string()
    }
    /// Position of physical slice k (k along the normal).
    fn position(&self, k: usize) -> [f64; 3] {
        let o = self.plane.orientation();
        let n = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        let origin = [-60.25, -80.5, -35.125];
        let d = k as f64 * self.slice_step;
        [
            origin[0] + d * n[0],
            origin[1] + d * n[1],
            origin[2] + d * n[2],
        ]
    }
    /// Permutation: the order in which slices are handed over (deliberately not sorted).
    pub fn given_order(&self) -> Vec<usize> {
        let n = self.slices;
        let mut v: Vec<usize> = (0..n).collect();
        // A fixed shuffle: stride through the slices with a step coprime to n.
        let step = (1..n)
            .rev()
            .find(|s| gcd(*s, n) == 1 && *s > n / 3)
            .unwrap_or(1);
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = (i * step + 3) % n;
        }
        v
    }

    fn header(&self, o: &mut Obj) {
        put(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put(o, tags::STUDY_INSTANCE_UID, VR::UI, &self.uid("study"));
        put(o, tags::SERIES_INSTANCE_UID, VR::UI, &self.uid("series"));
        put(o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &self.uid("for"));
        put(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        put(o, tags::PATIENT_NAME, VR::PN, "Synthetic^Brain");
        put(o, tags::PATIENT_ID, VR::LO, "SYN-0001");
        put(o, tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
        put(o, tags::PATIENT_SEX, VR::CS, "O");
        put(o, tags::STUDY_DATE, VR::DA, "20260102");
        put(o, tags::STUDY_TIME, VR::TM, "101500");
        put(o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        put(o, tags::STUDY_ID, VR::SH, "ST1");
        put(o, tags::ACCESSION_NUMBER, VR::SH, "ACC1");
        put(o, tags::STUDY_DESCRIPTION, VR::LO, "Brain MR (synthetic)");
        put(o, tags::MODALITY, VR::CS, "MR");
        put(o, tags::SERIES_NUMBER, VR::IS, "3");
        put(o, tags::MANUFACTURER, VR::LO, "Synthetic");
        if self.clinical_trial {
            put(o, tags::CLINICAL_TRIAL_SPONSOR_NAME, VR::LO, "Sponsor");
            put(o, tags::CLINICAL_TRIAL_PROTOCOL_ID, VR::LO, "PROT-7");
            put(
                o,
                tags::CLINICAL_TRIAL_PROTOCOL_NAME,
                VR::LO,
                "Protocol Seven",
            );
            put(o, tags::CLINICAL_TRIAL_SITE_ID, VR::LO, "S01");
            put(o, tags::CLINICAL_TRIAL_SITE_NAME, VR::LO, "Site One");
            put(o, tags::CLINICAL_TRIAL_SUBJECT_ID, VR::LO, "SUBJ-42");
            put(o, tags::CLINICAL_TRIAL_TIME_POINT_ID, VR::LO, "BASELINE");
            put(
                o,
                tags::CLINICAL_TRIAL_COORDINATING_CENTER_NAME,
                VR::LO,
                "Coordinating Center",
            );
        }
    }

    fn pixels(&self, k: usize) -> Vec<u16> {
        let (r, c) = (self.rows as usize, self.cols as usize);
        (0..r * c)
            .map(|i| ((i % c + i / c + 7 * k) % 4096) as u16)
            .collect()
    }

    fn pixel_module(&self, o: &mut Obj) {
        put_u16(o, tags::SAMPLES_PER_PIXEL, 1);
        put(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put_u16(o, tags::ROWS, self.rows);
        put_u16(o, tags::COLUMNS, self.cols);
        put_u16(o, tags::BITS_ALLOCATED, 16);
        put_u16(o, tags::BITS_STORED, 12);
        put_u16(o, tags::HIGH_BIT, 11);
        put_u16(o, tags::PIXEL_REPRESENTATION, 0);
    }

    /// Single-frame MR images, in [`Acq::given_order`].
    pub fn single_frame(&self) -> Vec<File> {
        let o = self.plane.orientation();
        self.given_order()
            .into_iter()
            .map(|k| {
                let mut d = Obj::new_empty();
                self.header(&mut d);
                put(&mut d, tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE);
                put(
                    &mut d,
                    tags::SOP_INSTANCE_UID,
                    VR::UI,
                    &self.uid(&format!("image {k}")),
                );
                put(&mut d, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\OTHER");
                put(&mut d, tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string());
                put(
                    &mut d,
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &ds(&self.position(k)),
                );
                put(&mut d, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &ds(&o));
                put(&mut d, tags::PIXEL_SPACING, VR::DS, &ds(&self.spacing));
                put(
                    &mut d,
                    tags::SLICE_THICKNESS,
                    VR::DS,
                    &format!("{}", self.slice_step),
                );
                put(&mut d, tags::SCANNING_SEQUENCE, VR::CS, "SE");
                put(&mut d, tags::SEQUENCE_VARIANT, VR::CS, "NONE");
                put(&mut d, tags::SCAN_OPTIONS, VR::CS, "");
                put(&mut d, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
                put(&mut d, tags::ECHO_TIME, VR::DS, "15");
                put(&mut d, tags::REPETITION_TIME, VR::DS, "500");
                put(&mut d, tags::ECHO_TRAIN_LENGTH, VR::IS, "1");
                self.pixel_module(&mut d);
                d.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::U16(self.pixels(k).into()),
                ));
                file(d)
            })
            .collect()
    }

    /// One Enhanced MR multi-frame image whose frames are in [`Acq::given_order`].
    pub fn enhanced(&self) -> File {
        let o = self.plane.orientation();
        let mut d = Obj::new_empty();
        self.header(&mut d);
        put(
            &mut d,
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::ENHANCED_MR_IMAGE_STORAGE,
        );
        put(
            &mut d,
            tags::SOP_INSTANCE_UID,
            VR::UI,
            &self.uid("enhanced image"),
        );
        put(
            &mut d,
            tags::IMAGE_TYPE,
            VR::CS,
            "ORIGINAL\\PRIMARY\\M\\NONE",
        );
        put(&mut d, tags::INSTANCE_NUMBER, VR::IS, "1");
        put(
            &mut d,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &self.slices.to_string(),
        );
        self.pixel_module(&mut d);
        let mut pm = Obj::new_empty();
        put(&mut pm, tags::PIXEL_SPACING, VR::DS, &ds(&self.spacing));
        put(
            &mut pm,
            tags::SLICE_THICKNESS,
            VR::DS,
            &format!("{}", self.slice_step),
        );
        let mut po = Obj::new_empty();
        put(&mut po, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &ds(&o));
        let mut shared = Obj::new_empty();
        put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![pm]);
        put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![po]);
        put_seq(
            &mut d,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![shared],
        );
        let mut per = Vec::new();
        let mut px = Vec::new();
        for k in self.given_order() {
            let mut it = Obj::new_empty();
            let mut pp = Obj::new_empty();
            put(
                &mut pp,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &ds(&self.position(k)),
            );
            put_seq(&mut it, tags::PLANE_POSITION_SEQUENCE, vec![pp]);
            let mut fc = Obj::new_empty();
            fc.put(DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::from(k as u32 + 1),
            ));
            put_seq(&mut it, tags::FRAME_CONTENT_SEQUENCE, vec![fc]);
            per.push(it);
            px.extend(self.pixels(k));
        }
        put_seq(&mut d, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per);
        d.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(px.into()),
        ));
        file(d)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub fn file(d: Obj) -> File {
    d.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("meta")
}

/// Label volume on `source` (axis 0 in source order): nested ellipsoids (edema 2 > enhancing 3 > necrosis 1)
/// and a separate blob (4) placed by physical slice rank, leaving some slices empty. Labels above `nseg`
/// are dropped; labels in `empty` are left out so that segment has no voxel.
pub fn labels(source: &SourceSeries, nseg: u16, empty: &[u16]) -> Array3<u16> {
    let [n, r, c] = source.shape();
    let mut l = Array3::<u16>::zeros((n, r, c));
    let nf = n as f64;
    for i in 0..n {
        let z = source.rank_of(i) as f64;
        for y in 0..r {
            for x in 0..c {
                let dz = (z - nf * 0.5) / (nf * 0.3);
                let dy = (y as f64 - r as f64 * 0.45) / (r as f64 * 0.3);
                let dx = (x as f64 - c as f64 * 0.55) / (c as f64 * 0.3);
                let d = (dx * dx + dy * dy + dz * dz).sqrt();
                let mut v = if d < 0.3 {
                    1
                } else if d < 0.55 {
                    3
                } else if d < 1.0 {
                    2
                } else {
                    0
                };
                let bz = (z - nf * 0.15).abs();
                if v == 0 && bz < 1.5 && x < c / 4 && y < r / 3 {
                    v = 4;
                }
                if v > nseg || empty.contains(&v) {
                    v = 0;
                }
                l[[i, y, x]] = v;
            }
        }
    }
    l
}

pub fn algorithm() -> AlgorithmIdentification {
    AlgorithmIdentification {
        family: codes::artificial_intelligence(),
        name: "segnode-unet".into(),
        version: "0.1.0".into(),
        parameters: Some("{\"patch\": 128}".into()),
        source: None,
    }
}

/// BraTS-style segment descriptions 1..=n.
pub fn segments(n: u16) -> Vec<SegmentDescription> {
    let defs = [
        ("Necrosis", codes::necrosis(), (255u8, 255u8, 0u8)),
        ("Edema", codes::edema(), (0, 255, 0)),
        ("Enhancing tumour", codes::enhancing_lesion(), (255, 0, 0)),
        ("Satellite lesion", codes::neoplasm(), (0, 128, 255)),
    ];
    (1..=n)
        .map(|k| {
            let (label, ty, (r, g, b)) = defs[(k as usize - 1) % defs.len()].clone();
            SegmentDescription::automatic(
                SegmentNumber::new(k).unwrap(),
                label,
                codes::morphologically_abnormal_structure(),
                ty,
                algorithm(),
            )
            .with_description(format!("{label} (synthetic)"))
            .with_srgb(r, g, b)
        })
        .collect()
}

pub fn equipment() -> Equipment {
    Equipment {
        manufacturer: "segnode".into(),
        model_name: "segnode tumour U-Net".into(),
        device_serial_number: "SN-0001".into(),
        software_versions: "dicom-seg 0.1.0".into(),
    }
}

pub fn builder<'a>(source: &'a SourceSeries, nseg: u16) -> SegmentationBuilder<'a> {
    let mut b = SegmentationBuilder::new(
        source,
        equipment(),
        ContentIdentification::new(
            "TUMOUR_SEG",
            Some("Brain tumour segmentation".into()),
            Some("segnode^worker".into()),
        )
        .unwrap(),
    )
    .series(901, Some("Tumour segmentation".into()));
    for s in segments(nseg) {
        b = b.segment(s);
    }
    b
}

pub fn source_of(files: &[File]) -> SourceSeries {
    SourceSeries::from_datasets(files.iter().map(|f| &**f)).expect("source series")
}

pub fn write_files(dir: &Path, files: &[File]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = dir.join(format!("img{i:04}.dcm"));
            f.write_to_file(&p).unwrap();
            p
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Peers

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const INSTALL: &str =
    "run scripts/install-test-deps.sh (apt: dcmtk dicom3tools orthanc; venv .venv-peers with \
pydicom highdicom dcmqi numpy nibabel)";

pub fn venv() -> PathBuf {
    let v = std::env::var_os("SEGNODE_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-peers"));
    assert!(
        v.join("bin/python").exists(),
        "peers venv not found at {} (set SEGNODE_PEERS_VENV or {INSTALL})",
        v.display()
    );
    v
}

pub fn python() -> PathBuf {
    venv().join("bin/python")
}

pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// A dcmqi binary from the dcmqi wheel.
pub fn dcmqi_bin(name: &str) -> PathBuf {
    let lib = venv().join("lib");
    for entry in
        std::fs::read_dir(&lib).unwrap_or_else(|e| panic!("{}: {e}; {INSTALL}", lib.display()))
    {
        let p = entry
            .unwrap()
            .path()
            .join("site-packages/dcmqi/bin")
            .join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "dcmqi binary {name} not found under {}/python*/site-packages/dcmqi/bin; {INSTALL}",
        lib.display()
    );
}

/// A system tool on PATH; fails loudly when missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Orthanc lives in /usr/sbin, which a non-root PATH may lack.
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")];
    for d in std::env::split_paths(&path).chain(extra) {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found on PATH; {INSTALL}");
}

/// Runs a command, returning (status ok, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// dciodvfy findings: (errors, warnings).
pub fn dciodvfy(path: &Path) -> (Vec<String>, Vec<String>) {
    let (_, out, err) = run(Command::new(tool("dciodvfy")).arg(path));
    let all = format!("{out}\n{err}");
    let errors = all
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(String::from)
        .collect();
    let warnings = all
        .lines()
        .filter(|l| l.starts_with("Warning"))
        .map(String::from)
        .collect();
    (errors, warnings)
}

pub use testkit::free_port;

/// Writes masks (u8, C order) and a JSON description for the python checkers.
pub fn write_expected(
    dir: &Path,
    name: &str,
    masks: &ndarray::Array4<u8>,
    source: &SourceSeries,
    json_extra: &str,
) {
    let raw: Vec<u8> = masks.iter().copied().collect();
    std::fs::write(dir.join(format!("{name}.masks.raw")), raw).unwrap();
    let shape = masks.shape();
    let frames: Vec<String> = source
        .frames()
        .iter()
        .map(|f| {
            format!(
                "{{\"sop\":\"{}\",\"frame\":{}}}",
                f.sop_instance_uid,
                f.frame_number
                    .map(|n| n.to_string())
                    .unwrap_or("null".into())
            )
        })
        .collect();
    let json = format!(
        "{{\"shape\":[{},{},{},{}],\"frames\":[{}]{}}}",
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        frames.join(","),
        json_extra
    );
    std::fs::write(dir.join(format!("{name}.json")), json).unwrap();
}

/// One-hot masks (segments, frames, rows, cols) from a label volume.
pub fn one_hot(labels: &Array3<u16>, nseg: u16) -> ndarray::Array4<u8> {
    let [n, r, c] = [labels.shape()[0], labels.shape()[1], labels.shape()[2]];
    let mut m = ndarray::Array4::<u8>::zeros((nseg as usize, n, r, c));
    for ((i, y, x), &v) in labels.indexed_iter() {
        if v > 0 {
            m[[v as usize - 1, i, y, x]] = 1;
        }
    }
    m
}

/// A working folder: a temporary one, or `$DICOM_SEG_TEST_OUT/<name>` (kept) when that is set.
pub fn workdir(name: &str) -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("DICOM_SEG_TEST_OUT") {
        Some(d) => {
            let p = PathBuf::from(d).join(name);
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            (None, p)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}
