//! A re-sent instance (same SOP Instance UID) against the real node, with dcmtk's storescu
//! playing two callers (`-aet`) and pynetdicom reading the exact status and Error Comment:
//! an identical copy is acknowledged and not staged again, the sender's own correction replaces
//! the staged copy (and reaches the job), another caller's different copy is refused with
//! 0xC000, audited, and the staged copy kept, before and after a kill -9 and restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{files_under, make_series, python, settled_spool, stdout_of, Node};

use crate::common::{audit_events, identical_resends, jobs, wait_jobs};

/// Copy `src` to `dst` with `edit` (Python on `ds`) applied, UIDs kept.
fn edited(src: &Path, dst: &Path, edit: &str) {
    let script = format!(
        "import sys, pydicom\nds = pydicom.dcmread(sys.argv[1])\n{edit}\nds.save_as(sys.argv[2])\nprint('ok')"
    );
    stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(src)
            .arg(dst),
    );
}

/// Send one file with pynetdicom as `calling`: "STATUS|Error Comment".
fn pynetdicom_store(node: &Node, calling: &str, file: &Path) -> String {
    let script = r#"
import sys, pydicom
from pynetdicom import AE
ae = AE(ae_title=sys.argv[2])
ds = pydicom.dcmread(sys.argv[3])
ae.add_requested_context(ds.SOPClassUID, "1.2.840.10008.1.2.1")
a = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="SEGNODE")
assert a.is_established
st = a.send_c_store(ds)
a.release()
print("%04X|%s" % (st.Status, str(st.get("ErrorComment", "")).strip()))
"#;
    stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(node.port.to_string())
            .arg(calling)
            .arg(file),
    )
    .trim()
    .to_string()
}

/// (Patient Name, first pixel, Series Description) of a Part-10 file, read by pydicom.
fn content(file: &Path) -> String {
    stdout_of(
        Command::new(python())
            .arg("-c")
            .arg(
                "import sys, pydicom\nds = pydicom.dcmread(sys.argv[1])\n\
                 print(ds.PatientName, int(ds.pixel_array[0, 0]), ds.get('SeriesDescription', ''), sep='|')",
            )
            .arg(file),
    )
    .trim()
    .to_string()
}

/// A synthetic study of `slices` 32x32 images in `dir/study`: the folder and its files, sorted.
fn study_in(dir: &Path, slices: &str, seed: &str) -> (PathBuf, Vec<PathBuf>) {
    let study = dir.join("study");
    make_series(
        &study,
        &["--slices", slices, "--size", "32", "--seed", seed],
    );
    let mut files = files_under(&study);
    files.sort();
    (study, files)
}

/// The study folder file of `sop` in the spool, once the materializer has written it.
fn spooled(node: &Node, sop: &str) -> PathBuf {
    settled_spool(&node.data_dir.join("spool"), 3)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{sop}.dcm"))
        .unwrap_or_else(|| panic!("{sop} is not in the spool"))
}

#[test]
fn resent_instances_identical_corrected_and_conflicting_across_a_restart() {
    resent_instances(&[]);
}

/// The same on the file path (each instance its own fsynced file, stamped before its fsync),
/// which instances larger than a journal segment take.
#[test]
fn resent_instances_on_the_file_path() {
    resent_instances(&["--journal-segment-mb", "0"]);
}

fn resent_instances(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = study_in(dir.path(), "3", "330");
    let original = &files[0];
    let corrected = dir.path().join("corrected.dcm");
    edited(
        original,
        &corrected,
        "a = ds.pixel_array\na[0, 0] = a[0, 0] + 7\nds.PixelData = a.tobytes()\nds.SeriesDescription = 'FLAIR corrected'",
    );
    let intruder = dir.path().join("intruder.dcm");
    edited(original, &intruder, "ds.PatientName = 'INTRUDER^X'");
    let (before, fixed) = (content(original), content(&corrected));
    assert_ne!(before, fixed);
    let sop = stdout_of(
        Command::new(python())
            .arg("-c")
            .arg("import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)")
            .arg(original),
    )
    .trim()
    .to_string();

    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.display().to_string();
    // a long quiet period: the study stays in the spool until the graceful stop drains it
    let mut args = vec!["--quiet-period", "600", "--audit-log", &audit_arg];
    args.extend_from_slice(extra);
    let mut node = Node::listener(&dir.path().join("data"), &args);
    let (rc, out) = node.storescu("PACS_A", &[], &study);
    assert_eq!(rc, 0, "{out}");
    let first = std::fs::read(spooled(&node, &sop)).unwrap();

    // identical bytes again, from the sender and from someone else: success, not staged again
    let (rc, out) = node.storescu("PACS_A", &[], original);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = node.storescu("PACS_C", &[], original);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(identical_resends(&node), 2, "{}", node.log_text());
    // another caller's different copy: refused, the Error Comment says why, the copy is kept
    let (rc, out) = node.storescu("PACS_B", &["-v"], &intruder);
    assert_ne!(rc, 0, "{out}");
    // dcmtk names the 0xCxxx family; pynetdicom below reads the exact code and comment
    assert!(
        out.contains("Received Store Response (Error: CannotUnderstand)"),
        "storescu should report 0xC000: {out}"
    );
    assert_eq!(
        pynetdicom_store(&node, "PACS_C", &intruder),
        "C000|conflict: another caller's different copy of it is staged"
    );
    assert_eq!(std::fs::read(spooled(&node, &sop)).unwrap(), first);

    // the sender's own correction replaces its copy
    let (rc, out) = node.storescu("PACS_A", &[], &corrected);
    assert_eq!(rc, 0, "{out}");
    assert!(
        node.log_text()
            .contains("replaced its sender's staged copy"),
        "{}",
        node.log_text()
    );

    // kill -9 and restart: who sent what survives with the instances
    node.kill();
    node.restart();
    assert_eq!(
        pynetdicom_store(&node, "PACS_B", &intruder)
            .split('|')
            .next(),
        Some("C000"),
        "still refused after the restart"
    );
    let (rc, out) = node.storescu("PACS_B", &[], original);
    assert_ne!(
        rc, 0,
        "the replaced original is now a conflicting copy too: {out}"
    );
    assert_eq!(pynetdicom_store(&node, "PACS_A", &corrected), "0000|");
    assert_eq!(content(&spooled(&node, &sop)), fixed);

    // a graceful stop drains the study into one job: it takes the corrected copy
    node.terminate(Duration::from_secs(60));
    let jobs = jobs(&node);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].objects.len(), 3);
    let key = jobs[0]
        .objects
        .iter()
        .find(|o| o.sop_uid.as_str() == sop)
        .expect("the instance is in the job")
        .key
        .clone();
    let staged = node.data_dir.join("store").join(key.as_str());
    assert_eq!(content(&staged), fixed, "the job's copy is the correction");

    // the audit trail names the refused caller and who sent the staged copy
    let conflicts = audit_events(&audit, "instance_conflict");
    assert_eq!(conflicts.len(), 4, "{conflicts:#?}");
    for c in &conflicts {
        assert_eq!(c["sop_instance_uid"], sop.as_str());
        assert_eq!(c["study_uid"], jobs[0].study_uid.as_str());
        assert_eq!(c["staged_by"]["calling_ae"], "PACS_A");
        assert_eq!(c["staged_by"]["peer"], "127.0.0.1");
        assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let callers: Vec<&str> = conflicts
        .iter()
        .map(|c| c["calling_ae"].as_str().unwrap())
        .collect();
    assert_eq!(callers, ["PACS_B", "PACS_C", "PACS_B", "PACS_B"]);
    assert!(
        !node.log_text().contains("INTRUDER"),
        "no patient data in the log"
    );
}

/// After the study's job is on the queue, its instances stay guarded for the emitted window
/// (across a kill -9 too: `spool/.provenance/`): an identical resend gives no second job,
/// another caller's copy is refused, and the sender's correction gives a new job for the
/// corrected study.
#[test]
fn an_emitted_study_is_guarded_for_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (study, files) = study_in(dir.path(), "2", "331");
    let intruder = dir.path().join("intruder.dcm");
    edited(&files[0], &intruder, "ds.PatientName = 'INTRUDER^Y'");
    let mut node = Node::listener(&dir.path().join("data"), &["--quiet-period", "1"]);
    let (rc, out) = node.storescu("PACS_A", &[], &study);
    assert_eq!(rc, 0, "{out}");
    let first = wait_jobs(&node, 1);
    // the spooled copies are gone once the emission finished: what guards the study after the
    // restart is its record in spool/.provenance/
    let emitting = node.data_dir.join("spool/.emitting");
    testkit::wait_until(Duration::from_secs(20), "the emission to finish", || {
        (std::fs::read_dir(&emitting).unwrap().count() == 0).then_some(())
    });
    assert!(testkit::spooled_instances(&node.data_dir.join("spool")).is_empty());
    node.kill();
    node.restart();
    let (rc, out) = node.storescu("PACS_A", &[], &files[1]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(identical_resends(&node), 1, "{}", node.log_text());
    assert_eq!(
        pynetdicom_store(&node, "PACS_B", &intruder)
            .split('|')
            .next(),
        Some("C000")
    );
    let (rc, out) = node.storescu("PACS_A", &[], &intruder);
    assert_eq!(rc, 0, "the sender may correct its own image: {out}");
    let both = wait_jobs(&node, 2);
    assert_ne!(both[1].job_id, first[0].job_id);
    assert_eq!(both[1].objects, first[0].objects, "same keys, new content");
}
