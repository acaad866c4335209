//! segnode at scale against the moto server on loopback (real SDK calls from the binary): `segnode
//! scp` stages a study to S3 and puts one job on SQS; `segnode worker`, a separate process, takes it,
//! writes the SEG under results/ and delivers it to a dcmtk storescp.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::Storescp;
use staging::{AwsSettings, Job, JobQueue, ObjectStore, S3Settings, S3Store, SqsQueue};
use testkit::{make_series, wait_until, ChildGuard, Moto, Node};

/// The moto server, a bucket on it and a job queue with its dead-letter queue.
async fn moto_bucket_and_queue(
    bucket: &str,
    queue: &str,
) -> (Moto, S3Store, staging::SqsSettings, SqsQueue) {
    let moto = Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let mut s3 = S3Settings::new(bucket);
    s3.force_path_style = true;
    let store = S3Store::connect(&aws, s3).await;
    store
        .client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let sqs = SqsQueue::create_with_dead_letter(&aws, queue, 3, Duration::from_secs(60))
        .await
        .unwrap();
    let q = SqsQueue::connect(&aws, sqs.clone()).await;
    (moto, store, sqs, q)
}

/// `segnode scp` with `--quiet-period QUIET` and the AWS flags of [`aws_flags`].
async fn start_scp(data: std::path::PathBuf, quiet: &str, flags: &[String]) -> Node {
    let mut args = vec!["--quiet-period".to_string(), quiet.to_string()];
    args.extend_from_slice(flags);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start("scp", &data, &args)
    })
    .await
    .unwrap()
}

/// The flags that point `segnode scp` / `worker` at `bucket` and the queue on the moto server.
fn aws_flags(bucket: &str, sqs: &staging::SqsSettings, endpoint: &str) -> Vec<String> {
    [
        "--bucket",
        bucket,
        "--path-style",
        "--queue-url",
        &sqs.queue_url,
        "--dlq-url",
        sqs.dead_letter_queue_url.as_deref().unwrap(),
        "--endpoint-url",
        endpoint,
        "--region",
        "us-east-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Receive (and hide) the messages on `queue`, waiting up to `timeout` for the first.
fn wait_for_messages(queue: &SqsQueue, timeout: Duration) -> Vec<staging::Received> {
    wait_until(timeout, "a job on SQS", || {
        let rt = tokio::runtime::Handle::current();
        let q = queue.clone();
        let m = std::thread::spawn(move || {
            rt.block_on(q.receive(10, Duration::from_secs(300), Duration::from_secs(1)))
        })
        .join()
        .unwrap()
        .unwrap();
        (!m.is_empty()).then_some(m)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_study_lands_in_s3_and_one_job_on_sqs() {
    let (moto, store, sqs, queue) = moto_bucket_and_queue("segnode-staging", "segnode-jobs").await;

    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    make_series(
        &series,
        &[
            "--slices", "5", "--size", "64", "--seed", "700", "--series", "2",
        ],
    );
    let flags = aws_flags("segnode-staging", &sqs, &moto.endpoint());
    let node = start_scp(dir.path().join("data"), "3", &flags).await;
    let (rc, out) = node.storescu("TESTSCU", &[], &series);
    assert_eq!(rc, 0, "{out}");

    let got = wait_for_messages(&queue, Duration::from_secs(60));
    assert_eq!(got.len(), 1);
    let job = Job::from_json(&got[0].body).unwrap();
    assert_eq!(job.objects.len(), 10);
    assert_eq!(job.calling_ae.as_deref(), Some("TESTSCU"));
    let keys = store
        .list(&format!("incoming/{}/", job.study_uid))
        .await
        .unwrap();
    let listed: Vec<_> = job.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(
        keys, listed,
        "every job object is in the bucket, and nothing else"
    );
    let first = store.get(&keys[0]).await.unwrap();
    assert_eq!(&first[128..132], b"DICM");
    // Exactly one message: nothing else visible, only ours in flight.
    let b = queue.backlog().await.unwrap();
    assert_eq!((b.visible, b.in_flight), (0, 1));
    drop(node);
}

#[tokio::test(flavor = "multi_thread")]
async fn scp_and_worker_processes_deliver_a_seg_through_s3_and_sqs() {
    let moto = Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let mut s3 = S3Settings::new("segnode-e2e");
    s3.force_path_style = true;
    let store = S3Store::connect(&aws, s3).await;
    store
        .client()
        .create_bucket()
        .bucket("segnode-e2e")
        .send()
        .await
        .unwrap();
    let sqs =
        SqsQueue::create_with_dead_letter(&aws, "segnode-e2e-jobs", 3, Duration::from_secs(60))
            .await
            .unwrap();
    let queue = SqsQueue::connect(&aws, sqs.clone()).await;
    let dlq = sqs.dead_letter_queue_url.clone().unwrap();
    let viewer = Storescp::start(&[]);

    let dir = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let aws_flags = |url: &str| -> Vec<String> {
        [
            "--bucket",
            "segnode-e2e",
            "--path-style",
            "--queue-url",
            url,
            "--dlq-url",
            &dlq,
            "--endpoint-url",
            &endpoint,
            "--region",
            "us-east-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let scp_flags = aws_flags(&sqs.queue_url);
    let node = tokio::task::spawn_blocking({
        let data = dir.path().join("scp");
        move || {
            let mut args = vec!["--quiet-period", "3"];
            args.extend(scp_flags.iter().map(String::as_str));
            Node::start("scp", &data, &args)
        }
    })
    .await
    .unwrap();
    let log = dir.path().join("worker.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut worker = ChildGuard::spawn(
        Command::new(testkit::segnode_bin())
            .arg("worker")
            .args(["--data-dir"])
            .arg(dir.path().join("worker"))
            .args(["--http", "off", "--destination", &viewer.destination()])
            .args(aws_flags(&sqs.queue_url))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out),
    );
    let study = testkit::workspace_root().join("testdata/studies/synth-007-axial-rle/dicom");
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[&study]);
    assert_eq!(rc, 0, "{out}");

    let (seg, viewer) = tokio::task::spawn_blocking({
        let log = log.clone();
        move || {
            let seg = wait_until(Duration::from_secs(300), "a SEG at the destination", || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!text.contains("dead-lettering"), "worker log:\n{text}");
                viewer.segs().into_iter().next()
            });
            (seg, viewer)
        }
    })
    .await
    .unwrap();
    assert!(std::fs::metadata(&seg).unwrap().len() > 1000);
    // The SEG is in the bucket under results/<study>/, and the job leaves the queue.
    // The SEG is in the bucket under results/<study>/, with volumes.json beside it.
    let results = store.list("results/").await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0]
        .as_str()
        .starts_with("results/2.25.293253754093074699753752768614597929384/"));
    assert!(results[0].as_str().ends_with(".dcm"), "{results:?}");
    assert_eq!(
        results[1].as_str(),
        "results/2.25.293253754093074699753752768614597929384/volumes.json"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = queue.backlog().await.unwrap();
        if b.total() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job still queued: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // SIGTERM: an idle worker stops promptly and cleanly.
    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "worker exit: {status:?}"
    );
    drop((node, viewer));
}

/// Issue 13 item 9: a study of 3,000 instances (real MR brain studies with DWI/perfusion have
/// thousands) makes a job whose inline object list is ~700 KB, nearly three times what a queue
/// with SQS's classic 256 KiB limit takes. Before the fix, emission retried forever and no job
/// ever arrived. Now the object list is a manifest
/// beside the study and the message points at it: the job arrives, small, and a separate
/// `segnode worker` reads all 3,000 keys from it. Tiny 4x4 instances keep the test short.
#[tokio::test(flavor = "multi_thread")]
async fn a_study_of_3000_instances_travels_as_a_manifest_and_the_worker_reads_every_key() {
    let (moto, store, sqs, queue) = moto_bucket_and_queue("segnode-big", "segnode-big-jobs").await;
    // SQS's classic limit, which the issue measured (new queues take up to 1 MiB since 2025,
    // about 4,400 instances of this shape; the message must stay small either way).
    queue
        .client()
        .set_queue_attributes()
        .queue_url(&sqs.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "262144",
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    make_series(
        &series,
        &[
            "--slices", "1000", "--size", "4", "--seed", "913", "--series", "3",
        ],
    );
    let aws_flags = aws_flags("segnode-big", &sqs, &moto.endpoint());
    let node = start_scp(dir.path().join("scp"), "2", &aws_flags).await;
    let (rc, out) = node.storescu("TESTSCU", &["-pdu", "131072"], &series);
    assert_eq!(rc, 0, "{out}");

    let got = tokio::task::block_in_place(|| wait_for_messages(&queue, Duration::from_secs(240)));
    assert_eq!(got.len(), 1, "one job for the study");
    let body = &got[0].body;
    println!("job message: {} bytes for 3,000 instances", body.len());
    assert!(
        body.len() < 2048,
        "the message stays small: {} bytes",
        body.len()
    );
    let header = Job::from_json(body).unwrap();
    assert_eq!(header.version, staging::JOB_VERSION);
    assert_eq!(header.object_count(), 3000);
    let job = Job::from_message(body, &store).await.unwrap();
    let mut staged: Vec<_> = store
        .list(&format!("incoming/{}/", job.study_uid))
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.parse_incoming().is_some())
        .collect();
    staged.sort();
    let listed: Vec<_> = job.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(listed.len(), 3000);
    assert_eq!(listed, staged, "the manifest names every staged instance");
    // Hand the job back and let a worker process, as deployed, take it.
    queue
        .release(&got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let log = dir.path().join("worker.log");
    let out = std::fs::File::create(&log).unwrap();
    let _worker = ChildGuard::spawn(
        Command::new(testkit::segnode_bin())
            .arg("worker")
            .args(["--data-dir"])
            .arg(dir.path().join("worker"))
            .args(["--http", "off"])
            .args(&aws_flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out),
    );
    let line = tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(120),
            "the worker reading the job's manifest",
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.lines()
                    .find(|l| l.contains("object list read from the job's manifest"))
                    .map(str::to_string)
            },
        )
    });
    assert!(line.contains("objects=3000"), "{line}");
    assert!(line.contains(&job.job_id), "{line}");
    drop(node);
}

/// Issue 13 item 8: on SIGTERM (ECS stopping the task) `segnode scp` stages the studies still
/// in their quiet period and enqueues their jobs before it exits, within `--drain-time`
/// (default 60 s, below the template's StopTimeout of 120 s). Before, they waited in the spool
/// for "the next run".
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stages_a_study_still_in_its_quiet_period() {
    let (moto, store, sqs, queue) =
        moto_bucket_and_queue("segnode-drain", "segnode-drain-jobs").await;
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    make_series(&series, &["--slices", "5", "--size", "16", "--seed", "914"]);
    let flags = aws_flags("segnode-drain", &sqs, &moto.endpoint());
    let mut node = start_scp(dir.path().join("scp"), "600", &flags).await;
    let (rc, out) = node.storescu("TESTSCU", &[], &series);
    assert_eq!(rc, 0, "{out}");
    let status = tokio::task::block_in_place(|| node.terminate(Duration::from_secs(90)));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit within the drain time: {status:?}\n{}",
        node.log_text()
    );
    // The process is gone: whatever it enqueued is on the queue now.
    let got = queue
        .receive(10, Duration::from_secs(60), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        1,
        "one job, enqueued before exit:\n{}",
        node.log_text()
    );
    let job = Job::from_message(&got[0].body, &store).await.unwrap();
    assert_eq!(job.objects.len(), 5);
    for o in &job.objects {
        assert!(
            store.exists(&o.key).await.unwrap(),
            "{} staged",
            o.key.as_str()
        );
    }
}
