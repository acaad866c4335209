//! The node against dcmtk, black box: echo, every accepted transfer syntax stored as
//! received, AE policy, concurrency, duplicates and reopened studies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{files_under, make_series, python, require_tool, stdout_of, wait_until, Node};

use crate::common;
use crate::common::wait_jobs;

fn stored_instances(node: &Node) -> Vec<PathBuf> {
    files_under(&node.data_dir.join("store/incoming"))
}

#[test]
fn echo_succeeds_and_a_wrong_called_ae_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &[]);
    let (rc, out) = node.echoscu("TESTSCU", "SEGNODE");
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = node.echoscu("TESTSCU", "NOTSEGNODE");
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("Called AE Title Not Recognized"), "{out}");
}

#[test]
fn calling_ae_allowlist_checks_title_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(
        &dir.path().join("data"),
        &[
            "--allow-calling",
            "GOODSCU@127.0.0.1",
            "--allow-calling",
            "FARSCU@10.9.9.9",
        ],
    );
    assert_eq!(node.echoscu("GOODSCU", "SEGNODE").0, 0);
    let (rc, out) = node.echoscu("BADSCU", "SEGNODE");
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    let (rc, out) = node.echoscu("FARSCU", "SEGNODE");
    assert_eq!(rc, 1, "FARSCU is allowed only from 10.9.9.9: {out}");
}

/// Safe by default: on every interface the node refuses to start for any caller, and says how
/// to name who may send; with an allowlist (or --allow-any-caller) it starts. Without --bind it
/// is on loopback only.
#[test]
fn a_listener_on_every_interface_needs_an_allowlist_or_an_explicit_any_caller() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(testkit::segnode_bin())
        .args([
            "serve",
            "--workers",
            "0",
            "--http",
            "off",
            "--bind",
            "0.0.0.0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("refused"))
        .args(["--port", &testkit::free_port().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:")
            && stderr.contains("--allow-calling")
            && stderr.contains("--allow-any-caller"),
        "{stderr}"
    );
    for (i, extra) in [
        &["--bind", "0.0.0.0", "--allow-calling", "GOODSCU@127.0.0.1"][..],
        &["--bind", "0.0.0.0", "--allow-any-caller"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let node = Node::listener(&dir.path().join(format!("open-{i}")), extra);
        assert_eq!(node.echoscu("GOODSCU", "SEGNODE").0, 0, "{extra:?}");
        assert!(node.log_text().contains("addr=0.0.0.0:"), "{extra:?}");
    }
    let node = Node::listener(&dir.path().join("default"), &[]);
    assert!(
        node.log_text().contains("addr=127.0.0.1:"),
        "{}",
        node.log_text()
    );
}

/// (name, how to make the files from the explicit-LE originals, storescu proposal flag, transfer syntax UID)
const SYNTAXES: &[(&str, &str, &str, &str)] = &[
    ("explicit-le", "copy", "-xe", "1.2.840.10008.1.2.1"),
    ("implicit-le", "dcmconv +ti", "-xi", "1.2.840.10008.1.2"),
    ("explicit-be", "dcmconv +tb", "-xb", "1.2.840.10008.1.2.2"),
    ("deflate", "dcmconv +td", "-xd", "1.2.840.10008.1.2.1.99"),
    (
        "jpeg-baseline",
        "dcmcjpeg +eb",
        "-xy",
        "1.2.840.10008.1.2.4.50",
    ),
    (
        "jpeg-extended",
        "dcmcjpeg +ee",
        "-xx",
        "1.2.840.10008.1.2.4.51",
    ),
    // storescu cannot propose Process 14 (.57); dcmsend proposes each file's own syntax.
    (
        "jpeg-lossless",
        "dcmcjpeg +el",
        "dcmsend",
        "1.2.840.10008.1.2.4.57",
    ),
    (
        "jpeg-lossless-sv1",
        "dcmcjpeg +e1",
        "-xs",
        "1.2.840.10008.1.2.4.70",
    ),
    ("jpeg-ls", "dcmcjpls", "-xt", "1.2.840.10008.1.2.4.80"),
    ("jpeg2000", "j2k", "-xv", "1.2.840.10008.1.2.4.90"),
    ("rle", "dcmcrle", "-xr", "1.2.840.10008.1.2.5"),
];

fn convert(how: &str, src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    if how == "j2k" {
        let script = testkit::workspace_root().join("conformance/tools/to_j2k.py");
        assert!(Command::new(python())
            .arg(script)
            .arg(src)
            .arg(dst)
            .status()
            .unwrap()
            .success());
        return;
    }
    for f in files_under(src) {
        let out = dst.join(f.file_name().unwrap());
        if how == "copy" {
            std::fs::copy(&f, &out).unwrap();
            continue;
        }
        let mut parts = how.split_whitespace();
        let tool = require_tool(parts.next().unwrap());
        let st = Command::new(tool)
            .args(parts)
            .arg(&f)
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "{how} failed on {}", f.display());
    }
}

/// Transfer Syntax UID and the raw Pixel Data bytes of a file, as pydicom reads them.
fn ts_and_pixels(files: &[PathBuf]) -> Vec<(String, String)> {
    let script = "import sys, hashlib, pydicom\nfor p in sys.argv[1:]:\n    ds = pydicom.dcmread(p)\n    print(ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID, hashlib.sha256(ds.PixelData).hexdigest())";
    let stdout = stdout_of(Command::new(python()).arg("-c").arg(script).args(files));
    let mut v: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let mut it = l.splitn(2, ' ');
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_transfer_syntax_is_accepted_and_stored_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &["--quiet-period", "2"]);
    for (i, (name, how, flag, ts)) in SYNTAXES.iter().enumerate() {
        let seed = (100 + i).to_string();
        let bits = if name.starts_with("jpeg-baseline") {
            "8"
        } else {
            "12"
        };
        let orig = dir.path().join(format!("orig-{name}"));
        make_series(
            &orig,
            &[
                "--slices", "6", "--size", "64", "--seed", &seed, "--bits", bits,
            ],
        );
        let sent = dir.path().join(format!("sent-{name}"));
        convert(how, &orig, &sent);
        let (rc, out) = if *flag == "dcmsend" {
            node.send("dcmsend", "TESTSCU", &[], &[&sent])
        } else {
            node.storescu("TESTSCU", &[flag], &sent)
        };
        assert_eq!(rc, 0, "{name}: storescu failed:\n{out}");
        // The study's job lists its six instances, each stored byte-for-byte as sent. (Under
        // heavy load a send may pause longer than the quiet period and the study complete
        // twice; the later job then lists all six, which is the behaviour a PACS relies on.)
        let study_suffix = format!(".{seed}");
        let job = wait_until(
            Duration::from_secs(60),
            "a job listing all six instances",
            || {
                common::jobs(&node)
                    .into_iter()
                    .find(|j| j.study_uid.as_str().ends_with(&study_suffix) && j.objects.len() == 6)
            },
        );
        let stored: Vec<PathBuf> = job
            .objects
            .iter()
            .map(|o| node.data_dir.join("store").join(o.key.as_str()))
            .collect();
        let got = ts_and_pixels(&stored);
        let want = ts_and_pixels(&files_under(&sent));
        assert_eq!(
            got, want,
            "{name}: stored objects differ from what was sent"
        );
        assert!(
            got.iter().all(|(_, rest)| rest.starts_with(ts)),
            "{name}: {got:?}"
        );
    }
}

#[test]
fn concurrent_associations_all_succeed_and_each_study_gets_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &["--quiet-period", "5"]);
    let series: Vec<PathBuf> = (0..8)
        .map(|i| {
            let p = dir.path().join(format!("s{i}"));
            make_series(
                &p,
                &[
                    "--slices",
                    "10",
                    "--size",
                    "64",
                    "--seed",
                    &(200 + i).to_string(),
                ],
            );
            p
        })
        .collect();
    let handles: Vec<_> = series
        .iter()
        .map(|p| {
            let (port, p) = (node.port.to_string(), p.clone());
            std::thread::spawn(move || {
                let st = Command::new(require_tool("storescu"))
                    .env("TCP_NODELAY", "1")
                    .args([
                        "-aet",
                        "BURST",
                        "-aec",
                        "SEGNODE",
                        "+sd",
                        "+r",
                        "127.0.0.1",
                        &port,
                    ])
                    .arg(&p)
                    .output()
                    .unwrap();
                (
                    st.status.code(),
                    String::from_utf8_lossy(&st.stderr).into_owned(),
                )
            })
        })
        .collect();
    for h in handles {
        let (rc, err) = h.join().unwrap();
        assert_eq!(rc, Some(0), "{err}");
    }
    let jobs = wait_jobs(&node, 8);
    std::thread::sleep(Duration::from_secs(3));
    let jobs_after = common::jobs(&node);
    assert_eq!(jobs_after.len(), 8, "exactly one job per study");
    let studies: BTreeSet<_> = jobs.iter().map(|j| j.study_uid.clone()).collect();
    assert_eq!(studies.len(), 8);
    assert!(jobs
        .iter()
        .all(|j| j.objects.len() == 10 && j.calling_ae.as_deref() == Some("BURST")));
    assert_eq!(stored_instances(&node).len(), 80);
}

#[test]
fn association_limit_rejects_with_local_limit_exceeded_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &["--max-associations", "2"]);
    // Two associations held open by pynetdicom, then a third is refused.
    let hold = r#"
import sys, time
from pynetdicom import AE
ae = AE(ae_title="HOLDER")
ae.add_requested_context("1.2.840.10008.1.1")
assocs = [ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="SEGNODE") for _ in range(2)]
assert all(a.is_established for a in assocs), "could not open the two holding associations"
print("held", flush=True)
time.sleep(float(sys.argv[2]))
for a in assocs:
    a.release()
"#;
    let mut holder = std::process::Command::new(python())
        .args(["-c", hold, &node.port.to_string(), "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
    }
    let (rc, out) = node.echoscu("THIRD", "SEGNODE");
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("Rejected Transient") && out.to_lowercase().contains("local limit exceeded"),
        "{out}"
    );
    assert!(holder.wait().unwrap().success());
    let (rc, out) = node.echoscu("THIRD", "SEGNODE");
    assert_eq!(rc, 0, "after the holders released: {out}");
}

#[test]
fn a_duplicate_instance_is_stored_once_and_a_reopened_study_gets_a_new_job() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &["--quiet-period", "4"]);
    let study = dir.path().join("study");
    make_series(
        &study,
        &[
            "--slices", "5", "--size", "64", "--seed", "300", "--series", "2",
        ],
    );
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    for f in files_under(&study) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let to = if name.starts_with("s01") {
            &first
        } else {
            &second
        };
        std::fs::copy(&f, to.join(&name)).unwrap();
    }
    // Series 1 twice in one association: stored once.
    let (rc, out) = node.send("storescu", "TESTSCU", &[], &[&first, &first]);
    assert_eq!(rc, 0, "{out}");
    let jobs1 = wait_jobs(&node, 1);
    assert_eq!(jobs1[0].objects.len(), 5);
    assert_eq!(stored_instances(&node).len(), 5);
    // Series 2 of the same study after its job: the study reopens and a second job lists all ten.
    let (rc, out) = node.storescu("TESTSCU", &[], &second);
    assert_eq!(rc, 0, "{out}");
    let jobs2 = wait_jobs(&node, 2);
    assert_eq!(jobs2[1].study_uid, jobs1[0].study_uid);
    assert_eq!(jobs2[1].objects.len(), 10);
    assert_ne!(jobs2[1].job_id, jobs1[0].job_id);
}

/// A PACS administrator who fixes an image and sends it again under the same UIDs expects a
/// new result; a byte-identical resend must not segment twice, and the log says which it was
/// (the listener acknowledges it without staging it again: its study was emitted within the
/// emitted window, resend.rs).
#[test]
fn a_corrected_image_under_the_same_uids_gets_a_new_job_and_a_resend_is_a_logged_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::listener(&dir.path().join("data"), &["--quiet-period", "2"]);
    let study = dir.path().join("study");
    make_series(&study, &["--slices", "3", "--size", "32", "--seed", "310"]);
    let (rc, out) = node.storescu("TESTSCU", &[], &study);
    assert_eq!(rc, 0, "{out}");
    let first = wait_jobs(&node, 1);
    // the same bytes again: acknowledged, not staged again, logged once per instance
    let (rc, out) = node.storescu("TESTSCU", &[], &study);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(common::identical_resends(&node), 3, "{}", node.log_text());
    assert_eq!(common::jobs(&node).len(), 1);
    // one image corrected (a pixel changed), UIDs kept: a second job for the same keys
    let mut files = files_under(&study);
    files.sort();
    let fixed = dir.path().join("fixed.dcm");
    stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(
                "import sys, pydicom\nds = pydicom.dcmread(sys.argv[1])\na = ds.pixel_array\n\
                 a[0, 0] = a[0, 0] + 1\nds.PixelData = a.tobytes()\nds.save_as(sys.argv[2])\nprint('ok')",
            )
            .arg(&files[0])
            .arg(&fixed),
    );
    let (rc, out) = node.storescu("TESTSCU", &[], &fixed);
    assert_eq!(rc, 0, "{out}");
    let jobs = wait_jobs(&node, 2);
    assert_eq!(jobs[1].study_uid, first[0].study_uid);
    assert_eq!(jobs[1].objects, first[0].objects, "same keys");
    assert_ne!(jobs[1].job_id, first[0].job_id, "new content, new job");
}
