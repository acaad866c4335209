//! Interoperability with real peers: dicom3tools (dciodvfy), highdicom, dcmqi, dcmtk + Orthanc.
//! These tests fail (never skip) when a peer is missing: run scripts/install-test-deps.sh.

use crate::common::*;
use dicom_seg::*;
use ndarray::{Array3, Array4, Axis};
use std::path::{Path, PathBuf};
use std::process::Command;

const RGB: [[u8; 3]; 4] = [[255, 255, 0], [0, 255, 0], [255, 0, 0], [0, 128, 255]];

/// One SEG we write, on one synthetic source.
#[derive(Clone)]
struct Case {
    name: &'static str,
    acq: Acq,
    enhanced: bool,
    nseg: u16,
    omit: bool,
    empty: Vec<u16>,
    fractional: bool,
}

fn cases() -> Vec<Case> {
    let c = |name, plane, slices, rows, cols| Case {
        name,
        acq: Acq::new(name, plane, slices, rows, cols),
        enhanced: false,
        nseg: 4,
        omit: true,
        empty: vec![],
        fractional: false,
    };
    let mut axial_trial = c("axial4_omit", Plane::Axial, 12, 24, 20);
    axial_trial.acq.clinical_trial = true;
    vec![
        axial_trial,
        Case {
            omit: false,
            ..c("axial4_keep", Plane::Axial, 12, 24, 20)
        },
        Case {
            nseg: 1,
            ..c("axial1_omit", Plane::Axial, 10, 19, 23)
        },
        Case {
            nseg: 1,
            omit: false,
            ..c("axial1_keep", Plane::Axial, 10, 19, 23)
        },
        c("oblique4_omit", Plane::Oblique, 12, 22, 26),
        Case {
            nseg: 1,
            omit: false,
            ..c("oblique1_keep", Plane::Oblique, 9, 22, 26)
        },
        c("sagittal4_omit", Plane::Sagittal, 11, 20, 18),
        Case {
            empty: vec![3],
            ..c("coronal4_emptyseg", Plane::Coronal, 11, 18, 20)
        },
        Case {
            enhanced: true,
            ..c("enhanced4_omit", Plane::Axial, 12, 20, 22)
        },
        Case {
            enhanced: true,
            nseg: 1,
            omit: false,
            ..c("enhanced1_keep", Plane::Oblique, 8, 20, 22)
        },
        Case {
            fractional: true,
            nseg: 2,
            ..c("fractional2_omit", Plane::Axial, 8, 16, 16)
        },
    ]
}

struct Built {
    seg_path: PathBuf,
    source: SourceSeries,
    /// Expected masks as stored (segments, source frames, rows, cols): 0/1, or 0..=255 for FRACTIONAL.
    expected: Array4<u8>,
}

fn sources(case: &Case) -> Vec<File> {
    if case.enhanced {
        vec![case.acq.enhanced()]
    } else {
        case.acq.single_frame()
    }
}

fn build(dir: &Path, case: &Case) -> Built {
    let files = sources(case);
    let src_dir = dir.join(format!("{}_src", case.name));
    write_files(&src_dir, &files);
    let source = source_of(&files);
    let labels = labels(&source, case.nseg, &case.empty);
    let b = builder(&source, case.nseg).omit_empty_frames(case.omit);
    let (seg, expected) = if case.fractional {
        // Probabilities: a smooth ramp inside the labelled region, 0 outside.
        let probs: Vec<Array3<f32>> = (1..=case.nseg)
            .map(|s| {
                Array3::from_shape_fn(source.shape(), |(i, y, x)| {
                    if labels[[i, y, x]] == s || (s == 2 && labels[[i, y, x]] != 0) {
                        ((y * 13 + x * 7) % 20) as f32 / 19.0
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let masks = (1..=case.nseg)
            .map(|s| (SegmentNumber::new(s).unwrap(), probs[s as usize - 1].view()))
            .collect();
        let seg = b
            .build(Masks::Fractional {
                kind: FractionalType::Probability,
                masks,
            })
            .unwrap();
        let mut e = Array4::<u8>::zeros((
            case.nseg as usize,
            source.shape()[0],
            source.shape()[1],
            source.shape()[2],
        ));
        for (k, p) in probs.iter().enumerate() {
            e.index_axis_mut(Axis(0), k)
                .assign(&p.mapv(|v| (v * 255.0).round() as u8));
        }
        (seg, e)
    } else {
        (
            b.build(Masks::Labels(labels.view())).unwrap(),
            one_hot(&labels, case.nseg),
        )
    };
    let seg_path = dir.join(format!("{}.seg.dcm", case.name));
    let mut f = std::fs::File::create(&seg_path).unwrap();
    seg.write_to(&mut f).unwrap();
    Built {
        seg_path,
        source,
        expected,
    }
}

#[test]
fn dciodvfy_reports_no_errors_on_our_segs() {
    let (_tmp, dir) = workdir("dciodvfy");
    let mut report = String::new();
    let mut failures = Vec::new();
    for case in cases() {
        let b = build(&dir, &case);
        let (errors, warnings) = dciodvfy(&b.seg_path);
        report.push_str(&format!(
            "{}: {} errors, {} warnings\n",
            case.name,
            errors.len(),
            warnings.len()
        ));
        for w in errors.iter().chain(&warnings) {
            report.push_str(&format!("  {w}\n"));
        }
        if !errors.is_empty() {
            failures.push(case.name);
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "dciodvfy errors in {failures:?}:\n{report}"
    );

    // The check itself can fail: a SEG without its (type 1) Segment Sequence must be flagged.
    let b = build(&dir, &cases()[0]);
    let mut broken = dicom_object::OpenFileOptions::new()
        .open_file(&b.seg_path)
        .unwrap();
    broken.take(dicom_dictionary_std::tags::SEGMENT_SEQUENCE);
    let broken_path = dir.join("broken.seg.dcm");
    broken.write_to_file(&broken_path).unwrap();
    let (errors, _) = dciodvfy(&broken_path);
    assert!(
        !errors.is_empty(),
        "dciodvfy did not flag a SEG without Segment Sequence"
    );
}

fn segments_json(nseg: u16) -> String {
    let items: Vec<String> = segments(nseg)
        .iter()
        .map(|s| {
            let k = s.number.get() as usize - 1;
            format!(
                "{{\"number\":{},\"label\":\"{}\",\"type\":[\"{}\",\"{}\",\"{}\"],\"rgb\":[{},{},{}]}}",
                s.number.get(),
                s.label,
                s.property_type.value,
                s.property_type.scheme,
                s.property_type.meaning,
                RGB[k][0],
                RGB[k][1],
                RGB[k][2]
            )
        })
        .collect();
    format!(",\"segments\":[{}]", items.join(","))
}

fn python_ok(args: &[&std::ffi::OsStr]) -> String {
    let (ok, out, err) = run(Command::new(python()).args(args));
    assert!(ok, "python {args:?} failed:\n{out}\n{err}");
    out
}

#[test]
fn highdicom_reads_our_segs_exactly() {
    let (_tmp, dir) = workdir("highdicom-reads-ours");
    let mut names = Vec::new();
    for case in cases() {
        let b = build(&dir, &case);
        write_expected(
            &dir,
            case.name,
            &b.expected,
            &b.source,
            &segments_json(case.nseg),
        );
        names.push(case.name);
    }
    let script = peers_dir().join("hd_read_ours.py");
    let mut args: Vec<&std::ffi::OsStr> = vec![script.as_os_str(), dir.as_os_str()];
    args.extend(names.iter().map(|n| std::ffi::OsStr::new(*n)));
    let out = python_ok(&args);
    println!("{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("OK ")).count(),
        names.len(),
        "{out}"
    );
}

#[test]
fn dcmqi_converts_our_segs() {
    let (_tmp, dir) = workdir("dcmqi-converts-ours");
    let tool = dcmqi_bin("segimage2itkimage");
    for case in cases().into_iter().filter(|c| !c.fractional) {
        let b = build(&dir, &case);
        let out = dir.join(format!("{}_nifti", case.name));
        std::fs::create_dir_all(&out).unwrap();
        let (ok, so, se) = run(Command::new(&tool)
            .arg("--inputDICOM")
            .arg(&b.seg_path)
            .arg("--outputDirectory")
            .arg(&out)
            .args(["--outputType", "nifti", "--prefix", "seg"]));
        assert!(ok, "segimage2itkimage failed on {}:\n{so}\n{se}", case.name);
        // One image per non-empty segment plus the metadata JSON naming our segments.
        let images = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".nii.gz")
            })
            .count();
        let non_empty = (0..case.nseg as usize)
            .filter(|&k| b.expected.index_axis(Axis(0), k).iter().any(|&v| v != 0))
            .count();
        assert!(
            images >= non_empty && images >= 1,
            "{}: {images} images for {non_empty} non-empty segments",
            case.name
        );
        let meta = std::fs::read_to_string(out.join("seg-meta.json")).unwrap();
        for s in segments(case.nseg) {
            assert!(
                meta.contains(&s.label),
                "{}: dcmqi metadata lacks segment {}",
                case.name,
                s.label
            );
        }
        // And the voxels land where the source pixels are, with the right values.
        let f = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let positions: Vec<String> = b
            .source
            .frames()
            .iter()
            .map(|fr| format!("[{}]", f(&fr.position)))
            .collect();
        let extra = format!(
            ",\"positions\":[{}],\"iop\":[{}],\"ps\":[{}]",
            positions.join(","),
            f(&b.source.orientation()),
            f(&b.source.pixel_spacing())
        );
        write_expected(&dir, case.name, &b.expected, &b.source, &extra);
        let script = peers_dir().join("dq_check_ours.py");
        python_ok(&[
            script.as_os_str(),
            out.as_os_str(),
            std::ffi::OsStr::new("seg"),
            dir.as_os_str(),
            std::ffi::OsStr::new(case.name),
        ]);
    }
}

/// Writes a label job (sources, label volume, geometry) for the python writers.
fn write_label_job(
    dir: &Path,
    name: &str,
    source: &SourceSeries,
    labels: &Array3<u16>,
    nseg: u16,
) -> (PathBuf, PathBuf) {
    let raw: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw_path = dir.join(format!("{name}.labels.raw"));
    std::fs::write(&raw_path, raw).unwrap();
    let f = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let frames: Vec<String> = source
        .frames()
        .iter()
        .map(|fr| {
            format!(
                "{{\"sop\":\"{}\",\"frame\":{}}}",
                fr.sop_instance_uid,
                fr.frame_number
                    .map(|n| n.to_string())
                    .unwrap_or("null".into())
            )
        })
        .collect();
    let positions: Vec<String> = source
        .frames()
        .iter()
        .map(|fr| format!("[{}]", f(&fr.position)))
        .collect();
    let order: Vec<String> = source
        .order_along_normal()
        .iter()
        .map(|i| i.to_string())
        .collect();
    let [n, r, c] = source.shape();
    let json = format!(
        "{{\"label_shape\":[{n},{r},{c}],\"nseg\":{nseg},\"frames\":[{}],\"positions\":[{}],\"order\":[{}],\"iop\":[{}],\"ps\":[{}]}}",
        frames.join(","),
        positions.join(","),
        order.join(","),
        f(&source.orientation()),
        f(&source.pixel_spacing())
    );
    let json_path = dir.join(format!("{name}.job.json"));
    std::fs::write(&json_path, json).unwrap();
    (json_path, raw_path)
}

fn check_read(seg_path: &Path, source: &SourceSeries, labels: &Array3<u16>, nseg: u16, who: &str) {
    let bytes = std::fs::read(seg_path).unwrap();
    let seg = ReadSegmentation::from_bytes(&bytes).unwrap_or_else(|e| panic!("{who}: {e}"));
    assert_eq!(seg.segments.len(), nseg as usize, "{who}");
    assert_eq!(seg.segmentation_type, SegmentationType::Binary, "{who}");
    let got = seg
        .masks_on(source)
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    let want = one_hot(labels, nseg);
    let diff = ndarray::Zip::from(&got)
        .and(&want)
        .fold(0usize, |n, a, b| n + usize::from(a != b));
    assert_eq!(diff, 0, "{who}: {diff} voxels differ");
    // Every frame was placed by reference and position consistently.
    assert_eq!(seg.map_frames(source).unwrap().len(), seg.frames.len());
}

#[test]
fn we_read_highdicom_segs_exactly() {
    let (_tmp, dir) = workdir("we-read-highdicom");
    for (name, acq, enhanced, nseg) in [
        (
            "hd_axial",
            Acq::new("hd_axial", Plane::Axial, 12, 21, 19),
            false,
            4u16,
        ),
        (
            "hd_oblique",
            Acq::new("hd_oblique", Plane::Oblique, 10, 20, 20),
            false,
            3,
        ),
        (
            "hd_enhanced",
            Acq::new("hd_enhanced", Plane::Sagittal, 10, 18, 22),
            true,
            4,
        ),
    ] {
        let files = if enhanced {
            vec![acq.enhanced()]
        } else {
            acq.single_frame()
        };
        let src_dir = dir.join(format!("{name}_src"));
        write_files(&src_dir, &files);
        let source = source_of(&files);
        let labels = labels(&source, nseg, &[]);
        let (json, raw) = write_label_job(&dir, name, &source, &labels, nseg);
        let out = dir.join(format!("{name}.hd.dcm"));
        let script = peers_dir().join("hd_make.py");
        python_ok(&[
            script.as_os_str(),
            src_dir.as_os_str(),
            json.as_os_str(),
            raw.as_os_str(),
            out.as_os_str(),
        ]);
        check_read(&out, &source, &labels, nseg, name);
    }
}

#[test]
fn we_read_dcmqi_segs_exactly() {
    let (_tmp, dir) = workdir("we-read-dcmqi");
    let tool = dcmqi_bin("itkimage2segimage");
    for (name, plane, nseg) in [
        ("dq_axial", Plane::Axial, 4u16),
        ("dq_oblique", Plane::Oblique, 3),
    ] {
        let acq = Acq::new(name, plane, 12, 22, 20);
        let files = acq.single_frame();
        let src_dir = dir.join(format!("{name}_src"));
        write_files(&src_dir, &files);
        let source = source_of(&files);
        let labels = labels(&source, nseg, &[]);
        let (json, raw) = write_label_job(&dir, name, &source, &labels, nseg);
        let out = dir.join(format!("{name}.dcmqi.dcm"));
        let work = dir.join(format!("{name}_work"));
        std::fs::create_dir_all(&work).unwrap();
        let script = peers_dir().join("dcmqi_make.py");
        python_ok(&[
            script.as_os_str(),
            src_dir.as_os_str(),
            json.as_os_str(),
            raw.as_os_str(),
            tool.as_os_str(),
            out.as_os_str(),
            work.as_os_str(),
        ]);
        check_read(&out, &source, &labels, nseg, name);
    }
}

/// Kills the child on drop and waits for it.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[test]
fn orthanc_accepts_our_seg_by_c_store() {
    let (_tmp, dir) = workdir("orthanc");
    let case = cases().remove(0);
    let b = build(&dir, &case);
    let orthanc = tool("Orthanc");
    let dcmsend = tool("dcmsend");
    let (dicom_port, http_port, peer_port) = (free_port(), free_port(), free_port());
    let storage = dir.join("orthanc-db");
    std::fs::create_dir_all(&storage).unwrap();
    let plugin = Path::new("/usr/share/orthanc/plugins/libOrthancDicomWeb.so");
    let plugins = if plugin.exists() {
        format!("[\"{}\"]", plugin.display())
    } else {
        "[]".into()
    };
    let config = format!(
        r#"{{"Name":"TEST","StorageDirectory":"{s}","IndexDirectory":"{s}","DicomAet":"ORTHANC","DicomPort":{dicom_port},
"HttpPort":{http_port},"RemoteAccessAllowed":false,"AuthenticationEnabled":false,"DicomCheckCalledAet":true,
"DicomAlwaysAllowEcho":true,"DicomAlwaysAllowStore":true,"DicomModalities":{{"segnode":["SEGNODE","127.0.0.1",{peer_port}]}},
"Plugins":{plugins}}}"#,
        s = storage.display()
    );
    let cfg = dir.join("orthanc.json");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
    let _orthanc = Child(
        Command::new(orthanc)
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Orthanc"),
    );
    // Wait for the DICOM port.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", dicom_port)).is_err() {
        assert!(
            t0.elapsed().as_secs() < 30,
            "Orthanc did not start: {}",
            std::fs::read_to_string(dir.join("orthanc.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let report = dir.join("dcmsend-report.txt");
    let (ok, so, se) = run(Command::new(dcmsend)
        .env("TCP_NODELAY", "1")
        .args(["-aet", "SEGNODE", "-aec", "ORTHANC", "--create-report-file"])
        .arg(&report)
        .arg("127.0.0.1")
        .arg(dicom_port.to_string())
        .arg(&b.seg_path));
    let rep = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(ok, "dcmsend failed:\n{so}\n{se}\n{rep}");
    assert!(
        rep.contains("0x0000 (Success)"),
        "C-STORE not successful:\n{rep}"
    );
    let sop = ReadSegmentation::from_bytes(&std::fs::read(&b.seg_path).unwrap())
        .unwrap()
        .sop_instance_uid;
    let script = peers_dir().join("orthanc_query.py");
    let out = python_ok(&[
        script.as_os_str(),
        std::ffi::OsStr::new(&http_port.to_string()),
        std::ffi::OsStr::new(&sop),
    ]);
    assert!(out.contains("\"Modality\": \"SEG\""), "{out}");
    assert!(out.contains("1.2.840.10008.5.1.4.1.1.66.4"), "{out}");
}
