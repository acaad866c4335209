//! DICOMweb delivery and the volume report, black box: segnode delivers by STOW-RS over TLS (a
//! Python/OpenSSL proxy in front of Orthanc) with basic auth to Orthanc's DICOMweb plugin; an independent client (conformance/tools/dicomweb.py)
//! finds the SEG and the SR by QIDO-RS and retrieves them by WADO-RS; the SEG is the one in the
//! results store, byte for byte; dciodvfy finds no error in the SR; highdicom reads its volumes
//! back, equal to the node's log and to the SEG's own voxel counts, and its references resolve to
//! the SEG's segment numbers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{
    free_port, require_tool, wait_listening, wait_until, workspace_root, ChildGuard, Node,
};

const USER: &str = "segnode";
const PASSWORD: &str = "s3cret-for-the-test";

fn study(name: &str) -> PathBuf {
    workspace_root().join("testdata/studies").join(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A throwaway CA and a server certificate for 127.0.0.1 (Orthanc wants key and certificate in
/// one PEM file).
fn make_pki(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = require_tool("openssl");
    let p = |n: &str| dir.join(n).display().to_string();
    run(Command::new(&openssl).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=segnode test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]));
    run(Command::new(&openssl).args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new(&openssl).args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.crt"),
    ]));
    let mut both = std::fs::read(dir.join("server.crt")).unwrap();
    both.extend(std::fs::read(dir.join("server.key")).unwrap());
    std::fs::write(dir.join("server.pem"), both).unwrap();
    (dir.join("ca.pem"), dir.join("server.pem"))
}

struct Orthanc {
    /// The HTTPS port of the TLS proxy in front of Orthanc.
    https_port: u16,
    guard: ChildGuard,
    _proxy: ChildGuard,
}

fn start_orthanc(dir: &Path, server_pem: &Path) -> Orthanc {
    let (dicom_port, http_port) = (free_port(), free_port());
    let cfg = dir.join("orthanc.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "Name": "TEST", "StorageDirectory": dir.join("db"), "IndexDirectory": dir.join("db"),
            "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true, "RegisteredUsers": { USER: PASSWORD },
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        })
        .to_string(),
    )
    .unwrap();
    let mut guard = ChildGuard::spawn(
        Command::new(require_tool("Orthanc"))
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("orthanc.log")).unwrap()),
    );
    wait_listening(&mut guard, "Orthanc", http_port, Duration::from_secs(30));
    // Orthanc 1.10's own HTTPS exits on the first TLS handshake here: TLS is terminated by a
    // Python (OpenSSL) proxy in front of it, as a PACS is usually published.
    let https_port = free_port();
    let mut proxy = ChildGuard::spawn(
        Command::new(testkit::python())
            .arg(workspace_root().join("conformance/tools/tls_proxy.py"))
            .arg(https_port.to_string())
            .arg(http_port.to_string())
            .arg(server_pem),
    );
    wait_listening(
        &mut proxy,
        "the TLS proxy",
        https_port,
        Duration::from_secs(30),
    );
    Orthanc {
        https_port,
        guard,
        _proxy: proxy,
    }
}

fn dicomweb(ca: &Path, args: &[&str]) -> String {
    testkit::stdout_of(
        Command::new(testkit::python())
            .arg(workspace_root().join("conformance/tools/dicomweb.py"))
            .args(args)
            .env("DW_USER", USER)
            .env("DW_PASSWORD", PASSWORD)
            .env("DW_CA", ca),
    )
}

fn tag_str<'a>(item: &'a serde_json::Value, tag: &str) -> &'a str {
    item[tag]["Value"][0].as_str().unwrap_or("")
}

#[test]
fn stow_rs_over_tls_with_basic_auth_then_qido_wado_and_the_volume_report() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server_pem) = make_pki(dir.path());
    let mut orthanc = start_orthanc(dir.path(), &server_pem);
    let base = format!("https://127.0.0.1:{}/dicom-web", orthanc.https_port);

    let data = dir.path().join("node");
    let node = Node::start_with_env(
        "serve",
        &data,
        &[
            "--quiet-period",
            "3",
            "--retry-delay",
            "1",
            "--destination",
            &format!("{base}/"),
            "--dicomweb-ca-file",
            ca.to_str().unwrap(),
        ],
        &[
            ("SEGNODE_DICOMWEB_USER", USER),
            ("SEGNODE_DICOMWEB_PASSWORD", PASSWORD),
        ],
    );
    let name = "synth-007-axial-rle";
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[&study(name).join("dicom")]);
    assert_eq!(rc, 0, "dcmsend: {out}");
    let log = wait_until(
        Duration::from_secs(300),
        "the SEG delivered by STOW-RS",
        || {
            let log = node.log_text();
            if log.contains("dead-lettering") {
                panic!("dead-lettered:\n{log}");
            }
            log.contains("SEG delivered").then_some(log)
        },
    );
    assert!(!log.contains(PASSWORD), "the password must never be logged");
    let study_uid = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(study(name).join("study.json")).unwrap(),
    )
    .unwrap()["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();

    // QIDO-RS: the SEG and the SR are each one instance in their own series of the MR study (the
    // MR images themselves were sent to segnode only).
    let series: serde_json::Value = serde_json::from_str(&dicomweb(
        &ca,
        &["qido", &format!("{base}/studies/{study_uid}/series")],
    ))
    .unwrap();
    let of = |modality: &str| -> Vec<&serde_json::Value> {
        series
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| tag_str(s, "00080060") == modality)
            .collect()
    };
    assert_eq!(series.as_array().unwrap().len(), 2, "{series}");
    let (seg_series, sr_series) = (of("SEG"), of("SR"));
    assert_eq!((seg_series.len(), sr_series.len()), (1, 1), "{series}");
    let seg_series_uid = tag_str(seg_series[0], "0020000E");
    let sr_series_uid = tag_str(sr_series[0], "0020000E");
    let instances = |series_uid: &str| -> serde_json::Value {
        serde_json::from_str(&dicomweb(
            &ca,
            &[
                "qido",
                &format!("{base}/studies/{study_uid}/series/{series_uid}/instances"),
            ],
        ))
        .unwrap()
    };
    let seg_inst = instances(seg_series_uid);
    let sr_inst = instances(sr_series_uid);
    assert_eq!(seg_inst.as_array().unwrap().len(), 1, "{seg_inst}");
    assert_eq!(sr_inst.as_array().unwrap().len(), 1, "{sr_inst}");

    // WADO-RS: what Orthanc stored is what the node made (the results store keeps the SEG).
    let wado = |series_uid: &str, inst: &serde_json::Value, out: &str| -> PathBuf {
        let sop = tag_str(&inst[0], "00080018");
        let files: Vec<String> = serde_json::from_str(&dicomweb(
            &ca,
            &[
                "wado",
                &format!("{base}/studies/{study_uid}/series/{series_uid}/instances/{sop}"),
                dir.path().join(out).to_str().unwrap(),
            ],
        ))
        .unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        PathBuf::from(&files[0])
    };
    let seg = wado(seg_series_uid, &seg_inst, "seg");
    let sr = wado(sr_series_uid, &sr_inst, "sr");
    // results/<study>/: the SEG, then volumes.json.
    let results = testkit::files_under(&data.join("store/results"));
    assert_eq!(results.len(), 2, "{results:?}");
    let ours = std::fs::read(&results[0]).unwrap();
    let theirs = std::fs::read(&seg).unwrap();
    assert!(
        ours == theirs,
        "the SEG retrieved by WADO-RS ({} bytes) differs from the one delivered ({} bytes)",
        theirs.len(),
        ours.len()
    );

    // The SR: valid, and its volumes are ours and the SEG's.
    let dciodvfy = Command::new(require_tool("dciodvfy"))
        .arg(&sr)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&dciodvfy.stderr);
    let errors = report.lines().filter(|l| l.starts_with("Error")).count();
    eprintln!("dciodvfy on the SR:\n{report}");
    assert_eq!(errors, 0, "dciodvfy on the SR:\n{report}");
    // Kept for a look after the run.
    let keep = testkit::target_dir().join("artifacts/dicomweb");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(&sr, keep.join("volume-report-sr.dcm")).unwrap();
    std::fs::copy(&seg, keep.join("seg.dcm")).unwrap();
    check_volume_report(&sr, &seg, &log);
    orthanc.guard.terminate(Duration::from_secs(10));
}

/// highdicom reads every volume of the SR back; they equal the node's log (2 decimals) and the
/// SEG's voxel counts; the references name the SEG and segments it has.
fn check_volume_report(sr: &Path, seg: &Path, log: &str) {
    let v: serde_json::Value = serde_json::from_str(&testkit::stdout_of(
        Command::new(testkit::python())
            .arg(workspace_root().join("conformance/tools/check_sr.py"))
            .arg(sr)
            .arg(seg),
    ))
    .unwrap();
    eprintln!("check_sr.py: {v}");
    assert_eq!(v["sop_class"], "1.2.840.10008.5.1.4.1.1.88.34");
    assert_eq!(v["template"], "1500");
    assert_eq!(v["study"], v["seg_study"]);
    let groups = v["groups"].as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["tracking_identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Necrotic core",
            "Oedema",
            "Enhancing tumour",
            "WT",
            "TC",
            "ET"
        ]
    );
    // The node logs `volumes=["Necrotic core 1.23 mL", ...]` for the segments.
    let line = log
        .lines()
        .find(|l| l.contains("volumes=["))
        .expect("the volumes in the log");
    let logged = |name: &str| -> f64 {
        let at = line.find(&format!("\"{name} ")).expect("volume in the log") + name.len() + 2;
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    for (i, g) in groups.iter().enumerate() {
        let ml = g["ml"].as_f64().unwrap();
        assert_eq!(g["unit"], serde_json::json!(["ml", "UCUM"]), "{g}");
        assert_eq!(g["seg_uid"], v["seg_uid"], "{g}");
        assert_eq!(g["source_series"], v["seg_source_series"], "{g}");
        assert_eq!(g["segments_known"], true, "{g}");
        assert_eq!(
            g["algorithm"],
            serde_json::json!(["segnode brats-synth-unet2d", shipped_algorithm_version()])
        );
        let seg_ml = g["seg_ml"].as_f64().unwrap();
        assert!(
            (ml - seg_ml).abs() <= 1e-9 * seg_ml.max(1.0),
            "{}: SR {ml} mL, SEG voxels {seg_ml} mL",
            names[i]
        );
        if i < 3 {
            assert_eq!(g["segments"], serde_json::json!([i + 1]));
            let l = logged(names[i]);
            assert!(
                (ml - l).abs() <= 0.005 + 1e-9,
                "{}: SR {ml} vs log {l}",
                names[i]
            );
        }
    }
    let segs = |i: usize| groups[i]["segments"].clone();
    assert_eq!(segs(3), serde_json::json!([1, 2, 3]), "WT");
    assert_eq!(segs(4), serde_json::json!([1, 3]), "TC");
    assert_eq!(segs(5), serde_json::json!([3]), "ET");
    let ml = |i: usize| groups[i]["ml"].as_f64().unwrap();
    assert!((ml(3) - (ml(0) + ml(1) + ml(2))).abs() < 1e-6);
    assert!(
        ml(0) > 0.0 && ml(1) > 0.0 && ml(2) > 0.0,
        "the study has a tumour"
    );
}

/// The failure paths a user meets first: a wrong password (HTTP 401: not retried within the attempt,
/// dead-lettered with the status) and a server certificate the node does not trust (no CA file, and
/// the system roots do not know the test CA). Nothing is stored either way, and no secret is logged.
#[test]
fn wrong_password_and_untrusted_certificate_are_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server_pem) = make_pki(dir.path());
    let mut orthanc = start_orthanc(dir.path(), &server_pem);
    let base = format!("https://127.0.0.1:{}/dicom-web", orthanc.https_port);
    let study_dir = study("synth-007-axial-rle").join("dicom");
    let ca_arg = ca.to_str().unwrap().to_string();
    let cases: [(&str, Vec<&str>, &str, &str); 2] = [
        (
            "wrong-password",
            vec!["--dicomweb-ca-file", &ca_arg],
            "not-the-password",
            "HTTP 401",
        ),
        ("untrusted", vec![], PASSWORD, "TLS"),
    ];
    for (name, extra, password, reason) in cases {
        let mut args = vec![
            "--quiet-period",
            "3",
            "--retry-delay",
            "1",
            "--max-receives",
            "1",
            "--delivery-backoff",
            "0.2",
            "--destination",
            &base,
        ];
        args.extend(extra);
        let node = Node::start_with_env(
            "serve",
            &dir.path().join(name),
            &args,
            &[
                ("SEGNODE_DICOMWEB_USER", USER),
                ("SEGNODE_DICOMWEB_PASSWORD", password),
            ],
        );
        let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[&study_dir]);
        assert_eq!(rc, 0, "dcmsend: {out}");
        let log = wait_until(Duration::from_secs(300), "the job dead-lettered", || {
            let log = node.log_text();
            log.contains("dead-lettering").then_some(log)
        });
        let line = log.lines().find(|l| l.contains("dead-lettering")).unwrap();
        assert!(
            line.contains(reason),
            "{name}: expected {reason:?} in\n{line}"
        );
        assert!(!log.contains(password), "{name}: the password was logged");
        let retries = log.matches("delivery failed; retrying").count();
        if name == "wrong-password" {
            assert_eq!(
                retries, 0,
                "a 401 is not retried within the attempt:\n{log}"
            );
        } else {
            assert_eq!(
                retries, 2,
                "a TLS failure is retried like a network error:\n{log}"
            );
        }
    }
    let series = dicomweb(&ca, &["qido", &format!("{base}/series")]);
    assert_eq!(series.trim(), "[]", "nothing may be stored: {series}");
    orthanc.guard.terminate(Duration::from_secs(10));
}

/// The `[algorithm] version` of the shipped model's manifest (what the SR must name).
fn shipped_algorithm_version() -> String {
    let manifest = std::fs::read_to_string(
        testkit::workspace_root().join("models/brats-synth-unet2d/model.toml"),
    )
    .unwrap();
    let section = &manifest[manifest
        .find("[algorithm]")
        .expect("[algorithm] in model.toml")..];
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("version"))
        .expect("[algorithm] version");
    line.split('"')
        .nth(1)
        .expect("a quoted version")
        .to_string()
}
