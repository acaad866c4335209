//! Refusals get the right DIMSE status and leave nothing behind; the node is observable
//! (/metrics, /healthz) and configurable from a TOML file with flag overrides.

use std::io::{Read, Write};
use std::process::Command;

use testkit::{
    files_under, free_port, make_series, python, settled_spool, stdout_of, wait_listening, Node,
};

/// Send each file with pynetdicom after applying `edit` (Python, on `ds`); print the statuses.
fn send_edited(node: &Node, files: &[std::path::PathBuf], edit: &str) -> String {
    let script = format!(
        r#"
import sys, pydicom
from pynetdicom import AE
ae = AE(ae_title="TESTSCU")
ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
a = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="SEGNODE")
assert a.is_established
out = []
for p in sys.argv[2:]:
    ds = pydicom.dcmread(p)
{edit}
    st = a.send_c_store(ds)
    out.append("%04X" % st.Status)
a.release()
print(" ".join(out))
"#
    );
    stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(node.port.to_string())
            .args(files),
    )
    .trim()
    .to_string()
}

#[test]
fn invalid_uids_get_c000_and_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("s");
    make_series(&series, &["--slices", "3", "--size", "32", "--seed", "800"]);
    let node = Node::listener(&dir.path().join("data"), &["--quiet-period", "600"]);
    let files = files_under(&series);
    let statuses = send_edited(
        &node,
        &files,
        r#"    if p.endswith("0001.dcm"):
        ds.StudyInstanceUID = "../../../../tmp/evil"
    elif p.endswith("0002.dcm"):
        del ds.SeriesInstanceUID"#,
    );
    assert_eq!(statuses, "C000 C000 0000");
    let spooled = settled_spool(&node.data_dir.join("spool"), 1);
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert!(!std::path::Path::new("/tmp/evil").exists());
    assert!(
        node.log_text().contains("Study Instance UID"),
        "the log says why"
    );
}

#[test]
fn objects_over_the_size_limit_get_a700() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    make_series(&big, &["--slices", "1", "--size", "1024", "--seed", "801"]); // 2 MiB of pixels
    let small = dir.path().join("small");
    make_series(&small, &["--slices", "1", "--size", "64", "--seed", "802"]);
    let node = Node::listener(
        &dir.path().join("data"),
        &["--max-object-mb", "1", "--quiet-period", "600"],
    );
    let files = [files_under(&big), files_under(&small)].concat();
    assert_eq!(send_edited(&node, &files, "    pass"), "A700 0000");
    assert_eq!(settled_spool(&node.data_dir.join("spool"), 1).len(), 1);
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn config_file_with_flag_overrides_and_metrics_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (http, dicom, flag_port) = (free_port(), free_port(), free_port());
    let data = dir.path().join("data");
    let cfg = dir.path().join("segnode.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:{http}\"\n\n[scp]\nae_title = \"FROMFILE\"\nport = {dicom}\nquiet_period_secs = 3\n\n[worker]\nworkers = 0\n",
            data.display()
        ),
    )
    .unwrap();
    // The flag wins over the file for the port; the AE title comes from the file.
    let mut child = testkit::ChildGuard::spawn(Command::new(testkit::segnode_bin()).args([
        "--config",
        cfg.to_str().unwrap(),
        "serve",
        "--port",
        &flag_port.to_string(),
    ]));
    wait_listening(
        &mut child,
        "segnode",
        flag_port,
        std::time::Duration::from_secs(30),
    );
    wait_listening(
        &mut child,
        "segnode",
        http,
        std::time::Duration::from_secs(30),
    );
    let echo = |called: &str| {
        Command::new(testkit::require_tool("echoscu"))
            .args([
                "-aet",
                "TESTSCU",
                "-aec",
                called,
                "127.0.0.1",
                &flag_port.to_string(),
            ])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(echo("FROMFILE"), Some(0));
    assert_eq!(echo("SEGNODE"), Some(1));
    let series = dir.path().join("s");
    make_series(&series, &["--slices", "4", "--size", "32", "--seed", "803"]);
    let st = Command::new(testkit::require_tool("storescu"))
        .args([
            "-aet",
            "TESTSCU",
            "-aec",
            "FROMFILE",
            "+sd",
            "+r",
            "127.0.0.1",
            &flag_port.to_string(),
        ])
        .arg(&series)
        .status()
        .unwrap();
    assert!(st.success());
    let metrics = testkit::wait_until(
        std::time::Duration::from_secs(30),
        "the job in /metrics",
        || {
            let m = http_get(http, "/metrics");
            m.contains("segnode_scp_jobs_enqueued_total 1").then_some(m)
        },
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("segnode_scp_instances_stored_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("segnode_scp_associations_total{outcome=\"rejected_ae\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("segnode_scp_echo_total 1"), "{metrics}");
    // The study was emitted, so the ingest journal has nothing left to move into the spool.
    assert!(
        metrics.contains("segnode_scp_journal_pending_bytes 0"),
        "{metrics}"
    );
    let health = http_get(http, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("ok"),
        "{health}"
    );
    assert!(http_get(http, "/nope").starts_with("HTTP/1.1 404"));
    // SIGTERM: a clean exit.
    let status = child
        .terminate(std::time::Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}
