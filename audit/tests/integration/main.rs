//! The audit log as its reader sees it: real files, real threads.

use std::io::Write;
use std::path::PathBuf;

use audit::{read_records, study_trail, AuditLog, Caller, Event};

fn caller(ae: &str) -> Caller {
    Caller {
        calling_ae: ae.into(),
        peer: "10.1.2.3:40112".into(),
        tls_subject: Some("CN=pacs1,O=Hospital".into()),
    }
}

fn full_run(log: &AuditLog) {
    log.record(Event::ConfigLoaded {
        role: "serve".into(),
        version: "0.1.0".into(),
        ae_title: Some("SEGNODE".into()),
        listeners: vec!["dicom 127.0.0.1:11112".into()],
        allowlist_entries: 1,
        destinations: vec!["PACS@10.0.0.5:104".into()],
    });
    log.record(Event::AssociationRejected {
        caller: caller("INTRUDER"),
        called_ae: "SEGNODE".into(),
        reason: "calling AE title not allowed".into(),
    });
    log.record(Event::AssociationAccepted {
        caller: caller("PACS1"),
        called_ae: "SEGNODE".into(),
    });
    log.record(Event::StudyReceived {
        study_uid: "1.2.3.4".into(),
        instances: 160,
        bytes: 21_000_000,
        callers: vec![caller("PACS1")],
        job_id: Some("job-1".into()),
    });
    log.record(Event::StudyReceived {
        study_uid: "1.2.3.5".into(),
        instances: 3,
        bytes: 9_000,
        callers: vec![caller("OTHER")],
        job_id: None,
    });
    log.record(Event::JobDone {
        study_uid: "1.2.3.4".into(),
        job_id: "job-1".into(),
        result_uid: Some("2.25.99".into()),
        seconds: 3.5,
    });
    log.record(Event::ResultDelivered {
        study_uid: "1.2.3.4".into(),
        job_id: "job-1".into(),
        destination: "PACS@10.0.0.5:104".into(),
        result_uid: Some("2.25.99".into()),
        status: "success".into(),
    });
}

#[test]
fn a_full_run_answers_who_sent_a_study_and_where_its_result_went() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let log = AuditLog::open(&path, Some("node-a".into())).unwrap();
        full_run(&log);
        log.sync().unwrap();
        assert_eq!(log.errors(), 0);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 7, "{text}");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "config_loaded");
    assert_eq!(first["node"], "node-a");
    let ts = first["ts"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-11-30T12:00:00.123Z".len(),
        "{ts}"
    );

    let found = read_records(&[path]).unwrap();
    assert_eq!((found.records.len(), found.unreadable), (7, 0));
    let trail = study_trail(&found.records, "1.2.3.4");
    assert_eq!(trail.records.len(), 3);
    assert_eq!(trail.senders, vec![caller("PACS1")]);
    assert_eq!(
        trail.deliveries,
        vec![("PACS@10.0.0.5:104".to_string(), "success".to_string())]
    );
    assert!(study_trail(&found.records, "9.9").records.is_empty());
}

#[test]
fn no_patient_data_fields_exist_in_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    full_run(&AuditLog::open(&path, None).unwrap());
    let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
    for word in ["patient", "birth", "name\"", "accession"] {
        assert!(!text.contains(word), "{word} in {text}");
    }
}

#[test]
fn hostile_peer_text_cannot_forge_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let forged = "X\n{\"ts\":\"0\",\"event\":\"job_done\"}\r\x1b[2J";
    {
        let log = AuditLog::open(&path, None).unwrap();
        log.record(Event::AssociationRejected {
            caller: caller(forged),
            called_ae: "SEGNODE\n".into(),
            reason: "calling AE title not allowed".into(),
        });
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");
    let found = read_records(&[path]).unwrap();
    match &found.records[0].event {
        Event::AssociationRejected { caller, .. } => assert_eq!(caller.calling_ae, forged),
        other => panic!("{other:?}"),
    }
}

#[test]
fn torn_and_overlong_lines_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    full_run(&AuditLog::open(&path, None).unwrap());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&vec![b'x'; audit::MAX_LINE * 3]).unwrap();
    f.write_all(b"\n\n").unwrap();
    full_run(&AuditLog::open(&path, None).unwrap());
    // A crash mid-line: the torn tail.
    f.write_all(br#"{"ts":"2026-11-30T12:00:00.000Z","event":"job_d"#)
        .unwrap();
    drop(f);
    let found = read_records(std::slice::from_ref(&path)).unwrap();
    assert_eq!((found.records.len(), found.unreadable), (14, 2));

    // At the limit exactly: a line of MAX_LINE bytes and its newline is read (here: unreadable as
    // JSON, one count), and the next line is not swallowed with it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(&vec![b'y'; audit::MAX_LINE]).unwrap();
    f.write_all(b"\n").unwrap();
    drop(f);
    full_run(&AuditLog::open(&path, None).unwrap());
    let found = read_records(&[path]).unwrap();
    assert_eq!((found.records.len(), found.unreadable), (21, 3));
}

#[test]
fn concurrent_writers_never_interleave_and_files_merge_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("audit-{i}.jsonl")))
        .collect();
    for path in &paths {
        let log = AuditLog::open(path, None).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..200 {
                        log.record(Event::JobDeadLettered {
                            study_uid: Some(format!("1.2.{t}.{i}")),
                            job_id: format!("job-{t}-{i}"),
                            reason: "x".repeat(i * 7),
                        });
                    }
                });
            }
        });
    }
    let found = read_records(&paths).unwrap();
    assert_eq!((found.records.len(), found.unreadable), (3200, 0));
    assert!(found.records.windows(2).all(|w| w[0].ts <= w[1].ts));
}

#[test]
fn standard_output_and_disabled_logs_are_accepted() {
    let off = AuditLog::disabled();
    off.record(Event::JobDeadLettered {
        study_uid: None,
        job_id: "j".into(),
        reason: "r".into(),
    });
    assert!(!off.is_enabled());
    assert!(AuditLog::open(std::path::Path::new("-"), None)
        .unwrap()
        .is_enabled());
    let missing = AuditLog::open(std::path::Path::new("/nonexistent/dir/audit.jsonl"), None);
    assert!(missing
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/dir"));
}
