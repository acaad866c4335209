//! The node's main job, black box: a 4-series MR study goes in by C-STORE, a DICOM-SEG comes out at
//! a real destination (dcmtk storescp, Orthanc). dciodvfy checks the SEG, highdicom reads it and its
//! masks are scored against the study's ground truth. Then the failure paths: a worker killed
//! mid-job, a destination that refuses, a study without FLAIR, compressed twins.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{audit_records, Storescp};
use staging::{JobQueue, SqliteQueue};
use testkit::{
    free_port, require_tool, wait_listening, wait_until, workspace_root, ChildGuard, Node,
};

fn study(name: &str) -> PathBuf {
    workspace_root().join("testdata/studies").join(name)
}

fn python_json(args: &[&str]) -> serde_json::Value {
    let stdout = testkit::stdout_of(
        Command::new(testkit::python())
            .arg(workspace_root().join("conformance/tools/check_seg.py"))
            .args(args),
    );
    serde_json::from_str(&stdout).expect("check_seg.py prints JSON")
}

/// (WT, TC, ET) Dice of a model card (models/<model>/eval_test_studies.json) for this study, rounded
/// down to 3 places.
fn card_floor_of(model: &str, name: &str) -> [f64; 3] {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root()
                .join("models")
                .join(model)
                .join("eval_test_studies.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"].as_str().unwrap().ends_with(name))
        .expect("study in the model card");
    ["WT", "TC", "ET"].map(|r| (case[r].as_f64().unwrap() * 1000.0).floor() / 1000.0)
}

/// The shipped 2D model's card.
fn card_floor(name: &str) -> [f64; 3] {
    card_floor_of("brats-synth-unet2d", name)
}

fn dciodvfy_errors(path: &Path) -> (usize, String) {
    let out = Command::new(require_tool("dciodvfy"))
        .arg(path)
        .output()
        .expect("dciodvfy");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    (
        text.lines().filter(|l| l.starts_with("Error")).count(),
        text,
    )
}

fn serve_with(data: &Path, destination: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        "--quiet-period",
        "3",
        "--destination",
        destination,
        "--retry-delay",
        "1",
    ];
    args.extend_from_slice(extra);
    Node::serve(data, &args)
}

fn send_study(node: &Node, dir: &Path) {
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[dir]);
    assert_eq!(rc, 0, "dcmsend: {out}");
}

fn wait_seg(viewer: &Storescp, node: &Node) -> PathBuf {
    wait_until(Duration::from_secs(300), "a SEG at the destination", || {
        let s = viewer.segs();
        if s.is_empty() && node.log_text().contains("dead-lettering") {
            panic!("the job was dead-lettered:\n{}", node.log_text());
        }
        s.into_iter().next()
    })
}

fn dead_letters(node: &Node) -> Vec<staging::DeadLetter> {
    let q = SqliteQueue::open(node.data_dir.join("queue.sqlite"), 3).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(q.dead_letters(10)).unwrap()
}

/// A node delivering to storescp, and what highdicom read from the SEG it delivered.
struct Delivered {
    node: Node,
    got: serde_json::Value,
    _viewer: Storescp,
    _data: tempfile::TempDir,
}

/// Sends the study `name` to a node that delivers to storescp; the SEG must pass dciodvfy and score
/// at least the model card's Dice (highdicom reads it back against the study's truth).
fn deliver_and_check(name: &str) -> Delivered {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(&data.path().join("node"), &viewer.destination(), &[]);
    send_study(&node, &study(name).join("dicom"));
    let seg = wait_seg(&viewer, &node);

    let (errors, report) = dciodvfy_errors(&seg);
    assert_eq!(errors, 0, "dciodvfy on the delivered SEG:\n{report}");

    let got = python_json(&[seg.to_str().unwrap(), study(name).to_str().unwrap()]);
    let floor = card_floor(name);
    eprintln!("highdicom: {got}; model card floor {floor:?}");
    for (i, r) in ["WT", "TC", "ET"].iter().enumerate() {
        let d = got[r].as_f64().unwrap();
        assert!(d >= floor[i], "Dice {r} {d:.4} < model card {}", floor[i]);
    }
    Delivered {
        node,
        got,
        _viewer: viewer,
        _data: data,
    }
}

#[test]
fn study_to_storescp_seg_validates_and_matches_truth() {
    let name = "synth-007-axial-rle";
    // bound by name (not `..`): the viewer and the node's data folder must live to the end
    let Delivered {
        node,
        got,
        _viewer: viewer,
        _data,
    } = deliver_and_check(name);
    assert_eq!(
        got["segments"],
        serde_json::json!(["Necrotic core", "Oedema", "Enhancing tumour"])
    );
    // The SEG references the FLAIR series, as the manifest says.
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(study(name).join("truth/truth.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        got["referenced_series"],
        truth["reference_series_instance_uid"]
    );
    // The volume report (TID 1500 SR) came with it, in the same association (checked in depth by
    // tests/dicomweb.rs).
    let srs = wait_until(Duration::from_secs(30), "the volume report SR", || {
        let s = viewer.of_class("1.2.840.10008.5.1.4.1.1.88.34");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(srs.len(), 1, "{srs:?}");
    let (errors, report) = dciodvfy_errors(&srs[0]);
    assert_eq!(errors, 0, "dciodvfy on the delivered SR:\n{report}");
    // The same SEG is kept in the results store, volumes.json beside it.
    let results = testkit::files_under(&node.data_dir.join("store/results"));
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[1].ends_with("volumes.json"), "{results:?}");
    assert_eq!(
        results[0].file_stem().unwrap().to_str(),
        got["sop_instance_uid"].as_str(),
        "the results store holds the SEG that was delivered"
    );
}

/// Orthanc 1.10 as a PACS: its REST API shows a SEG series in the study afterwards.
#[test]
fn study_to_orthanc_shows_a_seg_series() {
    let orthanc = require_tool("Orthanc");
    let dir = tempfile::tempdir().unwrap();
    let (dicom_port, http_port) = (free_port(), free_port());
    let cfg = dir.path().join("orthanc.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "Name": "TEST", "StorageDirectory": dir.path().join("db"), "IndexDirectory": dir.path().join("db"),
            "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
            "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "DicomCheckCalledAet": true,
            "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true,
        })
        .to_string(),
    )
    .unwrap();
    let mut orthanc = ChildGuard::spawn(
        Command::new(orthanc)
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_listening(&mut orthanc, "Orthanc", dicom_port, Duration::from_secs(30));
    wait_listening(&mut orthanc, "Orthanc", http_port, Duration::from_secs(30));
    let data = dir.path().join("node");
    let node = serve_with(&data, &format!("ORTHANC@127.0.0.1:{dicom_port}"), &[]);
    let name = "synth-007-axial-rle";
    send_study(&node, &study(name).join("dicom"));
    let study_uid = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(study(name).join("study.json")).unwrap(),
    )
    .unwrap()["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_string();
    let seg_series = wait_until(Duration::from_secs(300), "a SEG series in Orthanc", || {
        if node.log_text().contains("dead-lettering") {
            panic!("dead-lettered:\n{}", node.log_text());
        }
        let series = http_get_json(http_port, "/series?expand")?;
        series.as_array()?.iter().find_map(|s| {
            let modality = s["MainDicomTags"]["Modality"].as_str()?;
            (modality == "SEG").then(|| s.clone())
        })
    });
    // In the same study as the MR images, one instance.
    let parent = seg_series["ParentStudy"].as_str().unwrap();
    let st = http_get_json(http_port, &format!("/studies/{parent}")).unwrap();
    assert_eq!(
        st["MainDicomTags"]["StudyInstanceUID"].as_str(),
        Some(study_uid.as_str())
    );
    assert_eq!(seg_series["Instances"].as_array().unwrap().len(), 1);
    orthanc.terminate(Duration::from_secs(10));
}

fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// SIGKILL while the worker holds the job: the job comes back after its visibility timeout and the
/// destination ends up with exactly one SEG SOP Instance UID.
#[test]
fn worker_killed_mid_job_redoes_it_with_the_same_seg_uid() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let mut node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &["--visibility-timeout", "5"],
    );
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    wait_until(
        Duration::from_secs(120),
        "the worker to take the job",
        || node.log_text().contains("job received").then_some(()),
    );
    node.kill();
    assert!(
        viewer.segs().is_empty(),
        "delivered before the kill; the test proves nothing"
    );
    node.restart();
    wait_seg(&viewer, &node);
    // Let the job be deleted, then count what reached the destination.
    wait_until(Duration::from_secs(120), "the job to be done", || {
        node.log_text().contains("job done").then_some(())
    });
    let uids: BTreeSet<String> = viewer
        .segs()
        .iter()
        .map(|p| {
            let out = Command::new(require_tool("dcmdump"))
                .args(["+P", "0008,0018", "-q"])
                .arg(p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        })
        .collect();
    assert_eq!(
        uids.len(),
        1,
        "distinct SEG UIDs at the destination: {uids:?}"
    );
    assert!(dead_letters(&node).is_empty());
}

/// A destination that refuses every association: retried within the attempt and across receives,
/// then the job is in the dead-letter queue with the reason.
#[test]
fn refusing_destination_is_retried_then_dead_lettered_with_the_reason() {
    let viewer = Storescp::start(&["--refuse"]);
    let data = tempfile::tempdir().unwrap();
    let audit_log = data.path().join("audit.jsonl");
    let node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &[
            "--audit-log",
            audit_log.to_str().unwrap(),
            "--max-receives",
            "2",
            "--delivery-attempts",
            "2",
            "--delivery-backoff",
            "0.2",
        ],
    );
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    let dl = wait_until(Duration::from_secs(300), "a dead letter", || {
        let d = dead_letters(&node);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dl.len(), 1);
    let reason = &dl[0].reason;
    assert!(reason.contains("failed 2 times"), "{reason}");
    assert!(reason.contains(&viewer.destination()), "{reason}");
    let log = node.log_text();
    assert!(
        log.contains("delivery failed; retrying"),
        "no retry within the attempt:\n{log}"
    );
    assert!(log.contains("released for another attempt"), "{log}");
    assert!(viewer.segs().is_empty());

    // The audit trail has every failed attempt and the dead letter, with the reason.
    let records = audit_records(&audit_log);
    let failed: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "result_delivered")
        .collect();
    assert_eq!(failed.len(), 2, "one per receive: {records:#?}");
    for f in &failed {
        assert_eq!(f["destination"], viewer.destination().as_str());
        assert!(f["status"].as_str().unwrap().starts_with("failed: "), "{f}");
    }
    let dead: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["event"] == "job_dead_lettered")
        .collect();
    assert_eq!(dead.len(), 1, "{records:#?}");
    assert_eq!(dead[0]["reason"].as_str(), Some(reason.as_str()));
    assert!(!records.iter().any(|r| r["event"] == "job_done"));
}

/// `segnode serve --audit-log`: a caller off the allowlist is refused and recorded; a study sent
/// by an allowed caller is traced from its sender to its delivery by `segnode audit --study`,
/// and nothing in the trail identifies the patient.
#[test]
fn the_audit_trail_says_who_sent_a_study_and_where_its_result_went() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let audit_log = data.path().join("audit.jsonl");
    let node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &[
            "--audit-log",
            audit_log.to_str().unwrap(),
            "--allow-calling",
            "MODALITY@127.0.0.1",
        ],
    );
    let (rc, out) = node.echoscu("INTRUDER", "SEGNODE");
    assert_ne!(rc, 0, "an AE off the allowlist must be refused: {out}");
    let name = "synth-007-axial-rle";
    send_study(&node, &study(name).join("dicom"));
    wait_seg(&viewer, &node);
    let records = wait_until(Duration::from_secs(30), "job_done in the audit log", || {
        let r = audit_records(&audit_log);
        r.iter().any(|r| r["event"] == "job_done").then_some(r)
    });
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    for e in [
        "config_loaded",
        "association_rejected",
        "association_accepted",
        "study_received",
        "result_delivered",
        "job_done",
    ] {
        assert!(events.contains(&e), "{e} missing: {events:?}");
    }
    let rejected = records
        .iter()
        .find(|r| r["event"] == "association_rejected")
        .unwrap();
    assert_eq!(rejected["calling_ae"], "INTRUDER");
    assert!(rejected["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(rejected["reason"].as_str().unwrap().contains("allowlist"));

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study(name).join("study.json")).unwrap())
            .unwrap();
    let uid = meta["study_instance_uid"].as_str().unwrap();
    let text = std::fs::read_to_string(&audit_log).unwrap();
    let patient_id = meta["patient_id"].as_str().unwrap();
    assert!(!text.contains(patient_id), "patient ID in the audit log");
    assert!(!text.to_lowercase().contains("patient"), "{text}");

    let out = Command::new(testkit::segnode_bin())
        .args([
            "audit",
            "--log",
            audit_log.to_str().unwrap(),
            "--study",
            uid,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("study {uid}"), "{stdout}");
    let received = lines
        .iter()
        .find(|l| l.contains(" received "))
        .expect(&stdout);
    assert!(received.contains("from MODALITY at 127.0.0.1:"), "{stdout}");
    let delivered = lines
        .iter()
        .find(|l| l.contains(" delivered "))
        .expect(&stdout);
    assert!(
        delivered.contains(&format!("to {}: success", viewer.destination())),
        "{stdout}"
    );
    assert!(lines.iter().any(|l| l.contains(" job done ")), "{stdout}");
}

/// Three of the four contrasts: the job goes to the dead-letter queue on its first receive, with a
/// message that names what is missing and what was there.
#[test]
fn study_without_flair_is_dead_lettered_at_once() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(&data.path().join("node"), &viewer.destination(), &[]);
    let s = study("synth-007-axial-rle").join("dicom");
    let (rc, out) = node.send(
        "dcmsend",
        "MODALITY",
        &[],
        &[&s.join("01_T1"), &s.join("02_T1CE"), &s.join("03_T2")],
    );
    assert_eq!(rc, 0, "{out}");
    let dl = wait_until(Duration::from_secs(120), "a dead letter", || {
        let d = dead_letters(&node);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(
        dl[0].receive_count, 1,
        "no retries for a study that cannot succeed"
    );
    let reason = &dl[0].reason;
    assert!(reason.contains("no FLAIR series found"), "{reason}");
    assert!(
        reason.contains("AX T2 TSE"),
        "names the series present: {reason}"
    );
    assert!(viewer.segs().is_empty());
}

/// A head with skull, scalp, eyes and neck (issue 14): the brain-extraction stage strips it, the SEG
/// validates and matches the truth as the model card says, and the brain volume is in the log.
#[test]
fn head_study_to_storescp_is_skull_stripped_and_matches_truth() {
    let d = deliver_and_check("synth-007-head-axial-rle");
    let log = d.node.log_text();
    assert!(log.contains("brain extracted"), "{log}");
    assert!(log.contains("brain_ml"), "{log}");
}

/// The second shipped model through the whole node: `segnode serve --model
/// models/brats-synth-segresnet3d` (3D SegResNet, patch3d: brain extraction, canonical 2 mm grid, one
/// sliding window, sigmoid TC/WT/ET painted as BraTS 1/2/4) receives a head study by C-STORE and
/// delivers a SEG that dciodvfy accepts and that highdicom scores against the study's truth at the
/// 3D model card's Dice for it (models/brats-synth-segresnet3d/eval_test_studies.json; Python +
/// onnxruntime + MONAI's sliding window, which the Rust path equals to 4 decimals).
#[test]
fn segresnet3d_serves_a_head_study_end_to_end() {
    let name = "synth-007-head-axial-rle";
    let model = workspace_root().join("models/brats-synth-segresnet3d");
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &["--model", model.to_str().unwrap()],
    );
    send_study(&node, &study(name).join("dicom"));
    let seg = wait_seg(&viewer, &node);
    let (errors, report) = dciodvfy_errors(&seg);
    assert_eq!(errors, 0, "dciodvfy on the delivered SEG:\n{report}");
    let got = python_json(&[seg.to_str().unwrap(), study(name).to_str().unwrap()]);
    let floor = card_floor_of("brats-synth-segresnet3d", name);
    eprintln!("highdicom: {got}; 3D model card {floor:?}");
    for (i, r) in ["WT", "TC", "ET"].iter().enumerate() {
        let d = got[r].as_f64().unwrap();
        assert!(
            d >= floor[i],
            "3D model: Dice {r} {d:.4} < card {}",
            floor[i]
        );
    }
    let log = node.log_text();
    assert!(log.contains("brats-synth-segresnet3d"), "{log}");
    assert!(log.contains("brain extracted"), "{log}");
}

/// Eight slices (40 mm) through the upper half of a head, about 600 mL of brain: not a study the model can
/// read whole (truth/brain_ref.u8 of these slices: 611 mL; the manifest's plausible range starts at 800).
/// The job is dead-lettered at once with the measured volume, and nothing is delivered.
#[test]
fn a_slab_through_a_head_is_dead_lettered_as_an_implausible_brain() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(&data.path().join("node"), &viewer.destination(), &[]);
    let s = study("synth-007-head-axial-rle").join("dicom");
    let files: Vec<PathBuf> = ["01_T1", "02_T1CE", "03_T2", "04_FLAIR"]
        .iter()
        .flat_map(|series| {
            let dir = s.join(series);
            (11..=18).map(move |n| dir.join(format!("IM_{n:04}.dcm")))
        })
        .collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &refs);
    assert_eq!(rc, 0, "{out}");
    let dl = wait_until(Duration::from_secs(120), "a dead letter", || {
        let d = dead_letters(&node);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(
        dl[0].receive_count, 1,
        "no retries for an implausible brain"
    );
    let reason = &dl[0].reason;
    assert!(reason.contains("implausible brain volume"), "{reason}");
    assert!(reason.contains("800-3000 mL"), "{reason}");
    assert!(viewer.segs().is_empty());
}

fn segment_offline(dir: &Path, out: &Path) {
    let o = Command::new(testkit::segnode_bin())
        .arg("segment")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "segnode segment {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn transcode(tool: &str, from: &Path, to: &Path) {
    if tool == "to_j2k" {
        // pydicom + pylibjpeg-openjpeg (dcmtk 3.6.7 has no JPEG 2000 encoder); one folder at a time.
        for series in std::fs::read_dir(from).unwrap() {
            let series = series.unwrap().path();
            let o = Command::new(testkit::python())
                .arg(workspace_root().join("conformance/tools/to_j2k.py"))
                .arg(&series)
                .arg(to.join(series.file_name().unwrap()))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "to_j2k.py: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        return;
    }
    for f in testkit::files_under(from) {
        let dst = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let o = Command::new(require_tool(tool))
            .arg(&f)
            .arg(&dst)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool} {}: {}",
            f.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The same study as RLE, uncompressed, JPEG-LS and JPEG 2000 (all lossless) gives the same SEG;
/// and the JPEG-LS oblique study the same as its uncompressed twin.
#[test]
fn compressed_twins_segment_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let rle = study("synth-007-axial-rle").join("dicom");
    let native = dir.path().join("native");
    transcode("dcmdrle", &rle, &native);
    let jls = dir.path().join("jls");
    transcode("dcmcjpls", &native, &jls);
    let j2k = dir.path().join("j2k");
    transcode("to_j2k", &native, &j2k);
    let mut segs = Vec::new();
    for (name, d) in [
        ("rle", &rle),
        ("native", &native),
        ("jls", &jls),
        ("j2k", &j2k),
    ] {
        let out = dir.path().join(format!("{name}.seg.dcm"));
        segment_offline(d, &out);
        segs.push(out);
    }
    for other in &segs[1..] {
        let r = python_json(&["--same", segs[0].to_str().unwrap(), other.to_str().unwrap()]);
        assert_eq!(r["same_pixels"], true, "{}: {r}", other.display());
        assert_eq!(r["same_frames"], true, "{}: {r}", other.display());
        assert_eq!(r["same_uid"], true, "{}: {r}", other.display());
    }
    let jls042 = study("synth-042-oblique-jpegls").join("dicom");
    let native042 = dir.path().join("native042");
    transcode("dcmdjpls", &jls042, &native042);
    let a = dir.path().join("042-jls.seg.dcm");
    let b = dir.path().join("042-native.seg.dcm");
    segment_offline(&jls042, &a);
    segment_offline(&native042, &b);
    let r = python_json(&["--same", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(r["same_pixels"], true, "{r}");
    assert_eq!(r["same_frames"], true, "{r}");
}

/// The four series as multi-frame Legacy Converted Enhanced MR images (highdicom; geometry in the
/// functional groups): the same masks as from the single-frame twin, and a SEG dciodvfy accepts.
#[test]
fn enhanced_multiframe_sources_segment_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let native = dir.path().join("native");
    transcode(
        "dcmdrle",
        &study("synth-007-axial-rle").join("dicom"),
        &native,
    );
    let enhanced = dir.path().join("enhanced");
    let o = Command::new(testkit::python())
        .arg(workspace_root().join("conformance/tools/to_enhanced.py"))
        .arg(&native)
        .arg(&enhanced)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "to_enhanced.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        testkit::files_under(&enhanced).len(),
        4,
        "one file per series"
    );
    let a = dir.path().join("single.seg.dcm");
    let b = dir.path().join("enhanced.seg.dcm");
    segment_offline(&native, &a);
    segment_offline(&enhanced, &b);
    let r = python_json(&["--same", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(r["same_pixels"], true, "{r}");
    assert_eq!(r["frames"][0], r["frames"][1], "{r}");
    let (errors, report) = dciodvfy_errors(&b);
    assert_eq!(errors, 0, "dciodvfy on the SEG over Enhanced MR:\n{report}");
}

/// `serve --autoscale`: no worker while the queue is empty, one when a study's job arrives, none
/// again after the idle period; the job is done before the worker goes.
#[test]
fn autoscaled_serve_grows_the_pool_for_a_job_and_shrinks_it_when_idle() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &[
            "--workers",
            "0",
            "--autoscale",
            "--scale-interval",
            "0.5",
            "--min-tasks",
            "0",
            "--max-tasks",
            "2",
            "--target-per-task",
            "1",
            "--stabilisation-secs",
            "2",
            "--cooldown-secs",
            "1",
            "--idle-secs",
            "3",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !node.log_text().contains("worker started"),
        "a worker started with an empty queue:\n{}",
        node.log_text()
    );
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    wait_seg(&viewer, &node);
    let log = wait_until(Duration::from_secs(120), "the idle worker to stop", || {
        let log = node.log_text();
        log.contains("worker stopped").then_some(log)
    });
    let pos = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in\n{log}"))
    };
    assert!(pos("study complete: job enqueued") < pos("worker started"));
    assert!(pos("worker started") < pos("job done"));
    assert!(pos("job done") < pos("worker stopped"));
    assert_eq!(log.matches("worker started").count(), 1, "{log}");
}

/// SIGTERM while the worker holds a job: the node stops taking work, finishes the job (within the
/// shutdown grace period), delivers the SEG, deletes the job and exits 0.
#[test]
fn sigterm_mid_job_finishes_it_then_exits_cleanly() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let mut node = serve_with(&data.path().join("node"), &viewer.destination(), &[]);
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    wait_until(
        Duration::from_secs(120),
        "the worker to take the job",
        || node.log_text().contains("job received").then_some(()),
    );
    let status = node.terminate(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{}",
        node.log_text()
    );
    let log = node.log_text();
    assert!(log.contains("job done"), "{log}");
    assert_eq!(viewer.segs().len(), 1);
    let q = SqliteQueue::open(node.data_dir.join("queue.sqlite"), 3).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let backlog = rt.block_on(q.backlog()).unwrap();
    assert_eq!(backlog.total(), 0, "the finished job was deleted");
}

/// T1 and T2 acquired on other grids than FLAIR (other pixel and slice spacing, matrix and origin;
/// conformance/tools/regrid_series.py): they are resampled onto the FLAIR grid by patient coordinates
/// and the result stays close to the model card (the re-gridding blurs them twice, hence the margin).
/// Matching by index instead of position would misalign them and collapse the Dice.
#[test]
fn series_on_other_grids_are_resampled_onto_the_reference() {
    let name = "synth-007-axial-rle";
    let dir = tempfile::tempdir().unwrap();
    let native = dir.path().join("native");
    transcode("dcmdrle", &study(name).join("dicom"), &native);
    let mixed = dir.path().join("mixed");
    for (series, grid) in [
        ("01_T1", ["1.5", "3", "150", "-2.1"]),
        ("03_T2", ["2.2", "4", "112", "3.3"]),
    ] {
        let o = Command::new(testkit::python())
            .arg(workspace_root().join("conformance/tools/regrid_series.py"))
            .arg(native.join(series))
            .arg(mixed.join(series))
            .args([
                "--pixel", grid[0], "--slice", grid[1], "--size", grid[2], "--shift", grid[3],
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for series in ["02_T1CE", "04_FLAIR"] {
        for f in testkit::files_under(&native.join(series)) {
            let dst = mixed.join(series).join(f.file_name().unwrap());
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&f, dst).unwrap();
        }
    }
    let seg = dir.path().join("mixed.seg.dcm");
    segment_offline(&mixed, &seg);
    let got = python_json(&[seg.to_str().unwrap(), study(name).to_str().unwrap()]);
    let floor = card_floor(name);
    eprintln!("mixed grids: {got}; model card {floor:?}");
    for (i, r) in ["WT", "TC", "ET"].iter().enumerate() {
        let d = got[r].as_f64().unwrap();
        assert!(
            d >= floor[i] - 0.03,
            "Dice {r} {d:.4} vs model card {}",
            floor[i]
        );
    }
}

/// A destination that accepts Segmentation Storage but not Comprehensive 3D SR (a pynetdicom SCP
/// with that one context) still gets the SEG, without the volume report; the node says so.
#[test]
fn a_destination_without_sr_support_still_gets_the_seg() {
    let out = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let script = r#"
import sys
from pathlib import Path
from pynetdicom import AE, evt
out, port = Path(sys.argv[1]), int(sys.argv[2])
ae = AE(ae_title="SEGONLY")
ae.add_supported_context("1.2.840.10008.5.1.4.1.1.66.4", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
def store(event):
    ds = event.dataset
    ds.file_meta = event.file_meta
    ds.save_as(out / (ds.SOPInstanceUID + ".dcm"), enforce_file_format=True)
    return 0x0000
ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, store)])
"#;
    let mut scp = testkit::ChildGuard::spawn(
        Command::new(testkit::python())
            .args(["-c", script])
            .arg(out.path())
            .arg(port.to_string()),
    );
    wait_listening(
        &mut scp,
        "the pynetdicom SCP",
        port,
        Duration::from_secs(30),
    );
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(
        &data.path().join("node"),
        &format!("SEGONLY@127.0.0.1:{port}"),
        &[],
    );
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    wait_until(Duration::from_secs(300), "the SEG delivered", || {
        let log = node.log_text();
        if log.contains("dead-lettering") {
            panic!("dead-lettered:\n{log}");
        }
        log.contains("SEG delivered").then_some(())
    });
    let files = testkit::files_under(out.path());
    assert_eq!(files.len(), 1, "only the SEG: {files:?}");
    // results/<study>/: <sop>.dcm, then volumes.json.
    let results = testkit::files_under(&node.data_dir.join("store/results"));
    assert_eq!(
        files[0].file_name(),
        results[0].file_name(),
        "the SEG of the results store"
    );
    assert!(node
        .log_text()
        .contains("SEG sent without the volume report"));
}

/// `--no-volume-report`: the SEG alone reaches the destination.
#[test]
fn no_volume_report_sends_the_seg_alone() {
    let viewer = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = serve_with(
        &data.path().join("node"),
        &viewer.destination(),
        &["--no-volume-report"],
    );
    send_study(&node, &study("synth-007-axial-rle").join("dicom"));
    wait_seg(&viewer, &node);
    wait_until(Duration::from_secs(60), "the job done", || {
        node.log_text().contains("job done").then_some(())
    });
    assert_eq!(viewer.segs().len(), 1);
    assert!(
        viewer.of_class("1.2.840.10008.5.1.4.1.1.88.34").is_empty(),
        "an SR was sent despite --no-volume-report"
    );
    assert!(node.log_text().contains("objects=1"), "{}", node.log_text());
}

/// The README's first command: `segnode demo` runs the whole flow on embedded defaults (the bundled
/// head study through the listener, the brain-extraction stage, the worker and delivery), prints the
/// Dice against the study's truth, writes the montage and keeps the node's log in its file, not on
/// the terminal.
#[test]
fn demo_runs_the_main_job_on_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(testkit::segnode_bin())
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let dice_line = stdout
        .lines()
        .find(|l| l.contains("Dice against the ground truth:"))
        .unwrap_or_else(|| panic!("no Dice line:\n{stdout}"));
    let dice = |region: &str| -> f64 {
        let at = dice_line.find(&format!(" {region} ")).expect(region) + region.len() + 2;
        dice_line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    // The shipped model with its brain-extraction stage on the bundled head (card: WT 0.884,
    // TC 0.931, ET 0.790 on this study); a misplaced or skull-covered SEG scores far lower.
    assert!(dice("WT") >= 0.85, "{dice_line}");
    assert!(dice("TC") >= 0.88, "{dice_line}");
    assert!(dice("ET") >= 0.75, "{dice_line}");
    assert!(
        stdout.contains("brain volume (brain extraction):"),
        "{stdout}"
    );
    let png = std::fs::read(dir.path().join("segnode-demo.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the montage is not a PNG"
    );
    let log = std::fs::read_to_string(dir.path().join("segnode-demo.log")).unwrap();
    assert!(log.contains("job done"), "{log}");
    assert!(
        !stdout.contains(" INFO ") && !stderr.contains(" INFO "),
        "log lines on the terminal without -v:\n{stdout}\n{stderr}"
    );
    // The demo's destination is a receiver only: only the node enqueues a job.
    assert_eq!(
        log.matches("study complete: job enqueued").count(),
        1,
        "{log}"
    );
}
