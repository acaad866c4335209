//! Nothing acknowledged is lost: a node killed mid-study recovers every acknowledged
//! instance into exactly one job; low disk refuses work and recovers by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{
    files_under, make_series, python, require_tool, settled_spool, spooled_instances, stdout_of,
    wait_until, Node,
};

use crate::common;
use crate::common::jobs;

const STUDY_PREFIX: &str = "1.2.826.0.1.3680043.10.1511.1.";

/// `s02_0007.dcm` of study seed S -> SOP Instance UID (see make_series.py).
fn sop_of(file: &str, seed: u32) -> String {
    let (s, z) = file
        .trim_end_matches(".dcm")
        .trim_start_matches('s')
        .split_once('_')
        .unwrap();
    format!(
        "{STUDY_PREFIX}{seed}.{}.{}",
        s.parse::<u32>().unwrap(),
        z.parse::<u32>().unwrap()
    )
}

#[test]
fn kill_9_mid_study_loses_no_acknowledged_instance_and_makes_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 500;
    let series = dir.path().join("study");
    make_series(
        &series,
        &[
            "--slices",
            "60",
            "--size",
            "128",
            "--seed",
            &seed.to_string(),
            "--series",
            "3",
        ],
    );
    let mut node = Node::listener(&dir.path().join("data"), &["--quiet-period", "5"]);

    let mut scu = Command::new(require_tool("storescu"))
        .env("TCP_NODELAY", "1")
        .args([
            "-v",
            "-aet",
            "TESTSCU",
            "-aec",
            "SEGNODE",
            "+sd",
            "+r",
            "127.0.0.1",
            &node.port.to_string(),
        ])
        .arg(&series)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Read storescu's log as it goes: a file is acknowledged when a Success response follows it.
    let stderr = scu.stderr.take().unwrap();
    let acked_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = acked_so_far.clone();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut current = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(f) = line.strip_prefix("I: Sending file: ") {
                current = Path::new(f.trim())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
            } else if line.contains("Received Store Response (Success)") {
                acked.push(current.clone());
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        acked
    });
    // Kill the node once some of the study is acknowledged, while storescu is still sending
    // (the acknowledged instances are then in the ingest journal, most not yet in the spool's
    // study folders).
    let spool = node.data_dir.join("spool");
    wait_until(Duration::from_secs(60), "40 acknowledged instances", || {
        (acked_so_far.load(std::sync::atomic::Ordering::SeqCst) >= 40).then_some(())
    });
    node.kill();
    let _ = scu.wait();
    let acked: BTreeSet<String> = reader
        .join()
        .unwrap()
        .into_iter()
        .map(|f| sop_of(&f, seed))
        .collect();
    assert!(
        acked.len() >= 40 && acked.len() < 180,
        "the kill should land mid-study: {} acknowledged",
        acked.len()
    );

    node.restart();
    let all_jobs = wait_until(Duration::from_secs(60), "the recovered study's job", || {
        let j = jobs(&node);
        (!j.is_empty()).then_some(j)
    });
    std::thread::sleep(Duration::from_secs(5)); // a duplicate job would show up by now
    let all_jobs = if jobs(&node).len() > all_jobs.len() {
        jobs(&node)
    } else {
        all_jobs
    };
    let mut in_jobs: BTreeMap<String, usize> = BTreeMap::new();
    for job in &all_jobs {
        for o in &job.objects {
            *in_jobs.entry(o.sop_uid.to_string()).or_default() += 1;
            assert!(
                node.data_dir.join("store").join(o.key.as_str()).is_file(),
                "{} listed but not stored",
                o.key
            );
        }
    }
    for sop in &acked {
        assert_eq!(
            in_jobs.get(sop),
            Some(&1),
            "acknowledged instance {sop} must be in exactly one job; jobs: {}",
            all_jobs.len()
        );
    }
    assert_eq!(all_jobs.len(), 1, "one study, one job");
    // No instance is left behind in the spool once the job is out.
    assert!(
        spooled_instances(&spool).is_empty(),
        "spool still holds {:?}",
        spooled_instances(&spool)
    );
}

/// A small tmpfs so "disk full" is real and reversible. Unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs failed: this test needs root (CI and the dev machines run as root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path, mib: usize) {
    std::fs::write(path, vec![0u8; mib * 1024 * 1024]).unwrap();
}

#[test]
fn low_disk_refuses_associations_and_stores_with_a700_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, 64);
    let series = dir.path().join("series");
    make_series(&series, &["--slices", "3", "--size", "64", "--seed", "600"]);
    let node = Node::listener(
        &mnt.join("data"),
        &["--min-free-disk-mb", "24", "--quiet-period", "600"],
    );
    let filler = mnt.join("filler.bin");

    assert_eq!(node.echoscu("TESTSCU", "SEGNODE").0, 0);
    fill(&filler, 48);
    let (rc, out) = node.echoscu("TESTSCU", "SEGNODE");
    assert_eq!(
        rc, 1,
        "below the threshold the association must be refused: {out}"
    );
    assert!(out.contains("Rejected Transient"), "{out}");
    std::fs::remove_file(&filler).unwrap();
    let (rc, out) = node.echoscu("TESTSCU", "SEGNODE");
    assert_eq!(rc, 0, "space is back, so is the node: {out}");

    // Inside one association: success, then 0xA700 while the disk is low, then success again.
    let script = r#"
import sys, os, pydicom
from pynetdicom import AE
port, filler, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
ae = AE(ae_title="TESTSCU")
ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
a = ae.associate("127.0.0.1", port, ae_title="SEGNODE")
assert a.is_established
out = []
st = a.send_c_store(pydicom.dcmread(files[0])); out.append(st.Status)
with open(filler, "wb") as f:
    f.write(b"\0" * (48 * 1024 * 1024))
st = a.send_c_store(pydicom.dcmread(files[1])); out.append(st.Status)
os.remove(filler)
st = a.send_c_store(pydicom.dcmread(files[2])); out.append(st.Status)
a.release()
print(" ".join("%04X" % s for s in out))
"#;
    let files = files_under(&series);
    let stdout = stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(node.port.to_string())
            .arg(&filler)
            .args(&files),
    );
    assert_eq!(stdout.trim(), "0000 A700 0000");
    let spooled = settled_spool(&node.data_dir.join("spool"), 2);
    assert_eq!(
        spooled.len(),
        2,
        "the refused instance must not be kept: {spooled:?}"
    );
}

/// Issue 13 item 10: an acknowledged instance that cannot be written into its study folder
/// (here the folder's name is taken by a file) stalled the journal materializer, and the
/// emitter waited on its barrier forever: no study got a job any more. Now that study waits
/// (its instances stay in the journal, retried, a warning says why) and the others are
/// emitted; once the folder can be written, the held study gets its job too.
#[test]
fn an_unwritable_study_folder_holds_back_its_study_only() {
    let dir = tempfile::tempdir().unwrap();
    let (held, free) = (dir.path().join("held"), dir.path().join("free"));
    make_series(&held, &["--slices", "3", "--size", "16", "--seed", "531"]);
    make_series(&free, &["--slices", "3", "--size", "16", "--seed", "532"]);
    let data = dir.path().join("data");
    let node = Node::listener(&data, &["--quiet-period", "1"]);
    let blocker = data.join("spool").join(format!("{STUDY_PREFIX}531"));
    std::fs::write(&blocker, b"in the way").unwrap();
    for series in [&held, &free] {
        let (rc, out) = node.storescu("TESTSCU", &[], series);
        assert_eq!(rc, 0, "every instance acknowledged: {out}");
    }
    let first = common::wait_jobs(&node, 1);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].study_uid.as_str(), format!("{STUDY_PREFIX}532"));
    // Several quiet periods later the held study still has no job, and the log says why.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(jobs(&node).len(), 1);
    assert!(
        node.log_text()
            .contains("cannot write an acknowledged instance into its study folder"),
        "{}",
        node.log_text()
    );
    std::fs::remove_file(&blocker).unwrap();
    let both = common::wait_jobs(&node, 2);
    let held_job = both
        .iter()
        .find(|j| j.study_uid.as_str() == format!("{STUDY_PREFIX}531"))
        .expect("the held study's job");
    assert_eq!(held_job.objects.len(), 3, "none of its instances lost");
}

/// Issue 13 item 10: a job whose attempt hangs (here a staged instance is a FIFO nobody
/// writes: a read that never returns, like a hung network file system) was heart-beaten
/// forever, holding its worker. Now the attempt is abandoned at the job deadline and, on its
/// last receive, dead-lettered with the reason.
#[test]
fn a_hung_job_is_abandoned_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start_with_env(
        "serve",
        &data,
        &["--workers", "1", "--max-receives", "1"],
        &[("SEGNODE_JOB_DEADLINE", "2")],
    );
    let uid = |s: &str| staging::Uid::new(s).unwrap();
    let (study, series, sop) = (uid("1.2.3.77"), uid("1.2.3.77.1"), uid("1.2.3.77.1.1"));
    let key = staging::ObjectKey::incoming(&study, &series, &sop);
    let fifo = data.join("store").join(key.as_str());
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let job = staging::Job::new(
        study,
        vec![staging::JobObject {
            key,
            series_uid: series,
            sop_uid: sop,
        }],
        None,
        0,
    );
    let queue = staging::SqliteQueue::open(data.join("queue.sqlite"), 1).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(staging::JobQueue::send(
        &queue,
        &job.to_json(),
        Some(&job.job_id),
    ))
    .unwrap();
    let dead = wait_until(Duration::from_secs(60), "the job dead-lettered", || {
        let d = rt
            .block_on(staging::JobQueue::dead_letters(&queue, 10))
            .unwrap();
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("deadline of 2 s"),
        "{}",
        dead[0].reason
    );
    // The worker is free again: the node still answers.
    let (rc, out) = node.echoscu("TESTSCU", "SEGNODE");
    assert_eq!(rc, 0, "{out}");
}

/// Issue 13 item 8, the other side: a drain that cannot run (here `--drain-time 0`, as when the
/// grace period is spent) loses nothing. The study stays in the spool and its journal, and the
/// next listener on the same data folder emits it, every acknowledged instance included.
#[test]
fn a_study_left_by_a_cut_drain_is_emitted_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    make_series(&series, &["--slices", "4", "--size", "16", "--seed", "533"]);
    let data = dir.path().join("data");
    let mut node = Node::listener(&data, &["--quiet-period", "600", "--drain-time", "0"]);
    let (rc, out) = node.storescu("TESTSCU", &[], &series);
    assert_eq!(rc, 0, "{out}");
    let status = node.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(jobs(&node).is_empty(), "nothing staged on the way out");
    drop(node);
    let next = Node::listener(&data, &["--quiet-period", "1"]);
    let got = common::wait_jobs(&next, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].study_uid.as_str(), format!("{STUDY_PREFIX}533"));
    assert_eq!(got[0].objects.len(), 4, "every acknowledged instance");
}
