//! The S3-upload entry path against the moto server: a study uploaded to the bucket as
//! `uploads/<name>.zip`, or as a folder `uploads/<name>/...` closed by an empty `COMPLETE`, makes
//! the bucket's event notification (configured on the bucket, sent by moto as S3 would) put an S3
//! event message on the job queue; `segnode worker`, a separate process, expands it into a job,
//! writes the SEG under results/ and delivers it to a dcmtk storescp. The `s3:TestEvent` S3 sends
//! when notifications are configured is deleted, not dead-lettered; a non-DICOM upload is
//! dead-lettered with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Storescp;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use staging::{
    AwsSettings, JobQueue, ObjectKey, ObjectStore, S3Settings, S3Store, SqsQueue, SqsSettings,
};
use testkit::{wait_until, ChildGuard, Moto};

const BUCKET: &str = "segnode-uploads";
const STUDY_UID: &str = "2.25.293253754093074699753752768614597929384";

fn study_dir() -> PathBuf {
    testkit::workspace_root().join("testdata/studies/synth-007-axial-rle/dicom")
}

/// (name relative to the study folder, bytes) of every file of the bundled study.
fn study_files() -> Vec<(String, Vec<u8>)> {
    testkit::named_files(&study_dir())
}

/// `segnode worker` on the job queue of `sqs`, logging to `log`, with `extra` (its store and
/// destinations).
fn spawn_worker(
    dir: &Path,
    log: &Path,
    moto: &Moto,
    sqs: &SqsSettings,
    extra: &[&str],
) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(testkit::segnode_bin())
            .arg("worker")
            .arg("--data-dir")
            .arg(dir.join("worker"))
            .args(["--http", "off"])
            .args(extra)
            .args(["--queue-url", &sqs.queue_url])
            .args(["--dlq-url", sqs.dead_letter_queue_url.as_deref().unwrap()])
            .args(["--endpoint-url", &moto.endpoint(), "--region", "us-east-1"])
            .env("RUST_LOG", "info")
            // Plain field=value log lines: the tests read the SEG UIDs from them.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
}

fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A bucket whose `uploads/` notifications (`.zip`, and `/COMPLETE` markers) go to a job queue
/// with a dead-letter queue, as deploy/cloudformation.yaml sets them up, and a worker process.
struct Setup {
    _moto: Moto,
    store: S3Store,
    queue: SqsQueue,
    viewer: Storescp,
    worker: ChildGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let moto = Moto::start();
        let aws = AwsSettings {
            region: Some("us-east-1".into()),
            endpoint_url: Some(moto.endpoint()),
        };
        let mut s3 = S3Settings::new(BUCKET);
        s3.force_path_style = true;
        let store = S3Store::connect(&aws, s3).await;
        store
            .client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        let sqs: SqsSettings =
            SqsQueue::create_with_dead_letter(&aws, "segnode-jobs", 3, Duration::from_secs(60))
                .await
                .unwrap();
        let queue = SqsQueue::connect(&aws, sqs.clone()).await;
        let arn = queue
            .client()
            .get_queue_attributes()
            .queue_url(&sqs.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap();
        let to_queue = |id: &str, suffix: &str| {
            QueueConfiguration::builder()
                .id(id)
                .queue_arn(&arn)
                .events(Event::from("s3:ObjectCreated:*"))
                .filter(
                    NotificationConfigurationFilter::builder()
                        .key(
                            S3KeyFilter::builder()
                                .filter_rules(
                                    FilterRule::builder()
                                        .name(FilterRuleName::Prefix)
                                        .value("uploads/")
                                        .build(),
                                )
                                .filter_rules(
                                    FilterRule::builder()
                                        .name(FilterRuleName::Suffix)
                                        .value(suffix)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap()
        };
        store
            .client()
            .put_bucket_notification_configuration()
            .bucket(BUCKET)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(to_queue("zip-uploads", ".zip"))
                    .queue_configurations(to_queue("folder-uploads", "/COMPLETE"))
                    .build(),
            )
            .send()
            .await
            .unwrap();

        let viewer = Storescp::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let worker = spawn_worker(
            dir.path(),
            &log,
            &moto,
            &sqs,
            &[
                "--destination",
                &viewer.destination(),
                "--bucket",
                BUCKET,
                "--path-style",
            ],
        );
        Setup {
            _moto: moto,
            store,
            queue,
            viewer,
            worker,
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn put(&self, key: &str, data: Vec<u8>) {
        self.store
            .put(&ObjectKey::new(key).unwrap(), data.into())
            .await
            .unwrap();
    }

    /// Waits for `n` SEGs at the destination (the worker must not dead-letter anything meanwhile).
    async fn wait_segs(&self, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let text = self.log_text();
            assert!(!text.contains("dead-lettering"), "worker log:\n{text}");
            let segs = self.viewer.segs();
            if segs.len() >= n {
                return segs;
            }
            assert!(
                Instant::now() < deadline,
                "no SEG at the destination; worker log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `timeout` for the first dead letters.
    fn wait_dead_letters(&self, timeout: Duration) -> Vec<staging::DeadLetter> {
        wait_until(timeout, "a dead letter", || {
            let rt = tokio::runtime::Handle::current();
            let q = self.queue.clone();
            let d = std::thread::spawn(move || rt.block_on(q.dead_letters(10)))
                .join()
                .unwrap()
                .unwrap();
            (!d.is_empty()).then_some(d)
        })
    }

    async fn wait_queue_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = self.queue.backlog().await.unwrap();
            if b.total() == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "messages still queued: {b:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The one SEG (and its volumes.json) under results/<study>/, and every staged instance
    /// under incoming/<study>/.
    async fn check_bucket(&self) -> ObjectKey {
        let results = self.store.list("results/").await.unwrap();
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(
            results[1].as_str(),
            format!("results/{STUDY_UID}/volumes.json")
        );
        let volumes: serde_json::Value =
            serde_json::from_slice(&self.store.get(&results[1]).await.unwrap()).unwrap();
        assert_eq!(volumes["input"]["kind"], "dicom");
        assert_eq!(volumes["input"]["study_uid"], STUDY_UID);
        assert!(
            results[0].as_str().ends_with(&format!(
                "/{}.dcm",
                volumes["input"]["seg_sop_instance_uid"].as_str().unwrap()
            )),
            "{results:?}"
        );
        assert!(
            results[0]
                .as_str()
                .starts_with(&format!("results/{STUDY_UID}/")),
            "{results:?}"
        );
        let staged = self
            .store
            .list(&format!("incoming/{STUDY_UID}/"))
            .await
            .unwrap();
        assert_eq!(staged.len(), study_files().len());
        results[0].clone()
    }

    fn stop(mut self) {
        let status = self.worker.terminate(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "worker exit: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zip_uploaded_to_the_bucket_comes_back_as_a_seg() {
    let s = Setup::start().await;
    // A space in the name: S3 (and moto) URL-encode it as '+' in the event.
    s.put("uploads/synth 007.zip", zip_of(&study_files())).await;
    let segs = s.wait_segs(1).await;
    assert!(std::fs::metadata(&segs[0]).unwrap().len() > 1000);
    s.check_bucket().await;
    s.wait_queue_empty().await;
    // Configuring the notification made S3 send its s3:TestEvent: deleted, not dead-lettered.
    assert!(
        s.log_text().contains("S3 test event"),
        "worker log:\n{}",
        s.log_text()
    );
    assert!(s.queue.dead_letters(10).await.unwrap().is_empty());

    // A zip of something else is dead-lettered at once, with the reason.
    let junk = zip_of(&[("report.pdf".into(), b"%PDF-1.4 not DICOM".to_vec())]);
    s.put("uploads/report.zip", junk).await;
    let dead = s.wait_dead_letters(Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("uploads/report.zip")
            && dead[0]
                .reason
                .contains("\"report.pdf\" is not a DICOM Part-10 file"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].body.contains("\"Records\""), "{}", dead[0].body);
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_closed_by_a_complete_marker_comes_back_as_a_seg_once() {
    let s = Setup::start().await;
    // The files alone trigger nothing (the notification filters on the marker).
    for (name, data) in study_files() {
        s.put(&format!("uploads/synth-007/{name}"), data).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.viewer.segs().is_empty());
    assert_eq!(s.queue.backlog().await.unwrap().total(), 0);
    s.put("uploads/synth-007/COMPLETE", Vec::new()).await;
    let first = s.wait_segs(1).await;
    let result = s.check_bucket().await;
    s.wait_queue_empty().await;

    // The same event delivered again (S3 delivers at least once) gives the same SEG UID: the
    // bucket still holds one result and the destination receives a duplicate, not a new SEG.
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": BUCKET, "arn": format!("arn:aws:s3:::{BUCKET}")},
               "object": {"key": "uploads/synth-007/COMPLETE", "size": 0}}
    }]});
    s.queue.send(&event.to_string(), None).await.unwrap();
    let done = wait_until(Duration::from_secs(300), "the event done twice", || {
        let text = s.log_text();
        assert!(!text.contains("dead-lettering"), "worker log:\n{text}");
        let segs: Vec<String> = text
            .lines()
            .filter(|l| l.contains("job done"))
            .filter_map(|l| l.split("seg=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect();
        (segs.len() >= 2).then_some(segs)
    });
    assert_eq!(s.check_bucket().await, result);
    let sop = result
        .as_str()
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".dcm")
        .to_string();
    assert_eq!(done, vec![sop.clone(), sop], "SEG UIDs of the two runs");
    assert!(!first.is_empty());
    s.wait_queue_empty().await;
    s.stop();
}

/// Peak and current resident memory of process `pid`, in KiB (VmHWM, VmRSS).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Issue 13 item 12: the worker held a whole upload zip and every entry in memory (default cap
/// 4 GiB, on a 4 GiB task): its peak RSS grew by twice the zip's size before it even knew what
/// the upload held. Now the zip streams to a temporary folder and the entries are identified
/// one at a time: peak RSS no longer follows the zip's size. Measured, not timed: the worker's
/// peak RSS is reset (`clear_refs` 5) once it is idle, a ~100 MiB zip of two studies (refused
/// after every file is identified: memory of the expansion alone) is uploaded, and the growth
/// of the peak is compared with the zip's size.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_expands_a_large_zip_without_holding_it_in_memory() {
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for seed in ["915", "916"] {
        let out = dir.path().join(seed);
        testkit::make_series(
            &out,
            &[
                "--slices", "50", "--size", "512", "--seed", seed, "--series", "2",
            ],
        );
        files.extend(
            testkit::named_files(&out)
                .into_iter()
                .map(|(n, b)| (format!("{seed}/{n}"), b)),
        );
    }
    // Stored, not deflated: the zip is as big as its files.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in &files {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    let zip = w.finish().unwrap().into_inner();
    drop(files);
    let zip_kib = zip.len() as u64 / 1024;
    assert!(zip_kib > 90 * 1024, "{zip_kib} KiB");
    // Idle and ready: the model is loaded and the S3 test event handled.
    let pid = s.worker.0.as_ref().unwrap().id();
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(120), "the worker idle", || {
            s.log_text().contains("S3 test event").then_some(())
        })
    });
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (_, before) = memory_kib(pid);
    s.put("uploads/two-studies.zip", zip).await;
    let dead = s.wait_dead_letters(Duration::from_secs(180));
    assert!(
        dead[0].reason.contains("holds 2 studies"),
        "{}",
        dead[0].reason
    );
    let (peak, _) = memory_kib(pid);
    let growth = peak.saturating_sub(before);
    println!(
        "zip {zip_kib} KiB; worker RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB ({:.2} of the zip)",
        growth as f64 / zip_kib as f64
    );
    assert!(
        growth < zip_kib / 4,
        "peak RSS grew by {growth} KiB for a {zip_kib} KiB zip"
    );
    s.stop();
}

/// Issue 18: a BraTS-named NIfTI case uploaded as a folder closed by COMPLETE comes back as
/// `results/<case>/<case>_seg.nii.gz` (read by nibabel with the FLAIR file's affine, voxel
/// counts as `volumes.json` states them) and `results/<case>/volumes.json`; nothing goes to the
/// DICOM destination. A case missing a contrast, uploaded as a zip, is dead-lettered at once
/// with the reason and leaves nothing under `results/`.
#[tokio::test(flavor = "multi_thread")]
async fn a_nifti_case_comes_back_as_a_label_map_and_volumes() {
    const CASE: &str = "BraTS-GLI-00042-000";
    let s = Setup::start().await;
    let dir = tempfile::tempdir().unwrap();
    testkit::stdout_of(
        Command::new(testkit::python())
            .arg(testkit::workspace_root().join("models/synth/make_study.py"))
            .args(["--seed", "42", "--size", "128", "--nifti", "brats2023"])
            .arg("--out")
            .arg(dir.path()),
    );
    let case_dir = dir.path().join("nifti").join(CASE);
    let files = testkit::named_files(&case_dir);
    assert_eq!(files.len(), 4);
    for (name, data) in &files {
        s.put(&format!("uploads/{CASE}/{name}"), data.clone()).await;
    }
    s.put(&format!("uploads/{CASE}/COMPLETE"), Vec::new()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let results = loop {
        let text = s.log_text();
        assert!(!text.contains("dead-lettering"), "worker log:\n{text}");
        let keys = s.store.list("results/").await.unwrap();
        if keys.iter().any(|k| k.as_str().ends_with("/volumes.json")) {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "no NIfTI results; worker log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let names: Vec<&str> = results.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("results/{CASE}/{CASE}_seg.nii.gz"),
            format!("results/{CASE}/volumes.json")
        ]
    );
    let seg = s.store.get(&results[0]).await.unwrap();
    let volumes: serde_json::Value =
        serde_json::from_slice(&s.store.get(&results[1]).await.unwrap()).unwrap();
    assert_eq!(volumes["input"]["case"], CASE);
    assert_eq!(volumes["model"]["name"], "brats-synth-unet2d");
    let wt = volumes["regions"][0]["voxels"].as_u64().unwrap();
    assert!(wt > 1000, "{volumes}");
    let seg_path = dir.path().join("seg.nii.gz");
    std::fs::write(&seg_path, &seg).unwrap();
    let counts: Vec<u64> = volumes["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["voxels"].as_u64().unwrap())
        .collect();
    testkit::stdout_of(
        Command::new(testkit::python())
            .arg("-c")
            .arg(
                "import sys, numpy as np, nibabel as nib
o, i = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert o.shape == i.shape and np.allclose(o.affine, i.affine, atol=1e-5), (o.shape, o.affine, i.affine)
got = [int((np.asarray(o.dataobj) == v).sum()) for v in (1, 2, 3)]
assert got == [int(x) for x in sys.argv[3:]], (got, sys.argv[3:])",
            )
            .arg(&seg_path)
            .arg(case_dir.join(format!("{CASE}-t2f.nii.gz")))
            .args(counts.iter().map(|c| c.to_string())),
    );
    s.wait_queue_empty().await;
    assert!(s.viewer.segs().is_empty(), "a NIfTI result went to DICOM");
    assert!(
        s.log_text().contains("NIfTI case segmented"),
        "{}",
        s.log_text()
    );

    // No FLAIR: dead-lettered with the reason, nothing written.
    let partial: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .filter(|(n, _)| !n.ends_with("-t2f.nii.gz"))
        .map(|(n, b)| (format!("no-flair/{n}"), b))
        .collect();
    s.put("uploads/no-flair.zip", zip_of(&partial)).await;
    let dead = s.wait_dead_letters(Duration::from_secs(120));
    assert!(
        dead[0].reason.contains("uploads/no-flair.zip")
            && dead[0].reason.contains("missing NIfTI input(s): FLAIR"),
        "{}",
        dead[0].reason
    );
    assert!(s.store.list("results/no-flair/").await.unwrap().is_empty());
    s.stop();
}

/// Issue 18, FSx-fed workers: `segnode worker --store file:///...` reads the objects an S3 event
/// names from a local folder (what an FSx for Lustre file system linked to the bucket shows at its
/// mount) while the events come from SQS (moto), and writes its results there (the association
/// exports them to the bucket). Events are sent as the bucket's notification would send them; one
/// that arrives before its upload is on the file system (the import lags) is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_on_a_local_folder_takes_its_jobs_from_sqs() {
    const CASE: &str = "BraTS2021_00042";
    let moto = Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let sqs = SqsQueue::create_with_dead_letter(&aws, "fsx-jobs", 3, Duration::from_secs(60))
        .await
        .unwrap();
    let queue = SqsQueue::connect(&aws, sqs.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let fsx = dir.path().join("fsx");
    let study = dir.path().join("study");
    testkit::stdout_of(
        Command::new(testkit::python())
            .arg(testkit::workspace_root().join("models/synth/make_study.py"))
            .args(["--seed", "42", "--size", "128", "--nifti", "brats2021"])
            .arg("--out")
            .arg(&study),
    );
    std::fs::create_dir_all(&fsx).unwrap();
    let log = dir.path().join("worker.log");
    let store = format!("file://{}", fsx.display());
    let mut worker = spawn_worker(
        dir.path(),
        &log,
        &moto,
        &sqs,
        &[
            "--nifti-labels",
            "1,2,4",
            "--store",
            &store,
            "--retry-delay",
            "1",
        ],
    );
    let event = serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": BUCKET, "arn": format!("arn:aws:s3:::{BUCKET}")},
               "object": {"key": format!("uploads/{CASE}/COMPLETE"), "size": 0}}
    }]});
    queue.send(&event.to_string(), None).await.unwrap();
    // The event comes before the association has imported the upload: retried, not dead-lettered.
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(120),
            "an attempt before the import",
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("not on the file system yet").then_some(())
            },
        )
    });
    // What the association imports: uploads/<case>/..., the marker among them.
    let case_dir = fsx.join("uploads").join(CASE);
    std::fs::create_dir_all(&case_dir).unwrap();
    for (name, data) in testkit::named_files(&study.join("nifti").join(CASE)) {
        std::fs::write(case_dir.join(name), data).unwrap();
    }
    std::fs::write(case_dir.join("COMPLETE"), b"").unwrap();
    let volumes = fsx.join("results").join(CASE).join("volumes.json");
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(300), "results in the folder", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("dead-lettering"), "worker log:\n{text}");
            volumes.exists().then_some(())
        })
    });
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&volumes).unwrap()).unwrap();
    assert_eq!(v["input"]["case"], CASE);
    assert_eq!(v["segments"][2]["value"], 4, "{v}");
    let seg = fsx
        .join("results")
        .join(CASE)
        .join(format!("{CASE}_seg.nii.gz"));
    // BraTS 2018-2021 values: enhancing tumour is 4 in the map, as many voxels as volumes.json says.
    let fours = testkit::stdout_of(
        Command::new(testkit::python())
            .args([
                "-c",
                "import sys, numpy as np, nibabel as nib; print(int((np.asarray(nib.load(sys.argv[1]).dataobj) == 4).sum()))",
            ])
            .arg(&seg),
    );
    let fours: u64 = fours.trim().parse().unwrap();
    assert_eq!(fours, v["segments"][2]["voxels"].as_u64().unwrap());
    assert!(fours > 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while queue.backlog().await.unwrap().total() != 0 {
        assert!(Instant::now() < deadline, "the event is still queued");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker exit: {status:?}"
    );
}
