//! Helpers shared by the conformance test binaries.

use std::time::Duration;

use staging::{Job, SqliteQueue};
use testkit::{wait_until, Node};

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
#[allow(dead_code)] // not every test binary uses it
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
