//! Helpers shared by the conformance test modules.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use staging::{Job, SqliteQueue};
use testkit::{free_port, require_tool, wait_listening, wait_until, ChildGuard, Node};

/// Every line of an audit log (`--audit-log`) as JSON, in file order; none while the file does
/// not exist yet. A line that is not JSON fails the test.
#[allow(dead_code)] // not every test module uses it
pub fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The audit records of one `event` kind.
#[allow(dead_code)]
pub fn audit_events(path: &std::path::Path, event: &str) -> Vec<serde_json::Value> {
    audit_records(path)
        .into_iter()
        .filter(|r| r["event"] == event)
        .collect()
}

/// How many re-sent instances the node acknowledged without staging them again (its log says so
/// once per instance).
pub fn identical_resends(node: &Node) -> usize {
    node.log_text()
        .matches("identical copy of a staged instance")
        .count()
}

/// The jobs now on the node's SQLite queue (peeked, not received).
pub fn jobs(node: &Node) -> Vec<Job> {
    let q = SqliteQueue::open(node.data_dir.join("queue.sqlite"), 3).unwrap();
    q.peek()
        .unwrap()
        .iter()
        .map(|m| Job::from_json(&m.body).unwrap())
        .collect()
}

/// Wait until at least `n` jobs are on the queue.
pub fn wait_jobs(node: &Node, n: usize) -> Vec<Job> {
    wait_until(
        Duration::from_secs(60),
        &format!("{n} job(s) on the queue"),
        || {
            let j = jobs(node);
            (j.len() >= n).then_some(j)
        },
    )
}

const SEG_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// A dcmtk storescp destination writing into its own folder.
pub struct Storescp {
    pub port: u16,
    pub out: tempfile::TempDir,
    _child: ChildGuard,
}

impl Storescp {
    pub fn start(extra: &[&str]) -> Storescp {
        let out = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = ChildGuard::spawn(
            Command::new(require_tool("storescp"))
                .args(["-aet", "VIEWER", "-od"])
                .arg(out.path())
                .args(["+xa", "-pdu", "131072"])
                .args(extra)
                .arg(port.to_string())
                .env("TCP_NODELAY", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        wait_listening(&mut child, "storescp", port, Duration::from_secs(20));
        Storescp {
            port,
            out,
            _child: child,
        }
    }

    pub fn destination(&self) -> String {
        format!("VIEWER@127.0.0.1:{}", self.port)
    }

    /// SEG files received so far (storescp writes the file when the C-STORE completes).
    pub fn segs(&self) -> Vec<PathBuf> {
        self.of_class(SEG_CLASS)
    }

    /// Files received so far whose file meta group names `class` (the Media Storage SOP Class:
    /// an SR that references a SEG names the SEG class further on, in its data set).
    pub fn of_class(&self, class: &str) -> Vec<PathBuf> {
        testkit::files_under(self.out.path())
            .into_iter()
            .filter(|p| {
                std::fs::read(p)
                    .map(|b| {
                        if b.len() < 144 {
                            return false;
                        }
                        let meta_len =
                            u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
                        let head = &b[..b.len().min(144 + meta_len)];
                        head.windows(class.len()).any(|w| w == class.as_bytes())
                    })
                    .unwrap_or(false)
            })
            .collect()
    }
}
