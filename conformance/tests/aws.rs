//! segnode at scale against the moto server on loopback (real SDK calls from the binary): `segnode
//! scp` stages a study to S3 and puts one job on SQS; `segnode worker`, a separate process, takes it,
//! writes the SEG under results/ and delivers it to a dcmtk storescp.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Storescp;
use staging::{AwsSettings, Job, JobQueue, ObjectStore, S3Settings, S3Store, SqsQueue};
use testkit::{make_series, wait_until, ChildGuard, Moto, Node};

#[tokio::test(flavor = "multi_thread")]
async fn a_study_lands_in_s3_and_one_job_on_sqs() {
    let moto = Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let mut s3 = S3Settings::new("segnode-staging");
    s3.force_path_style = true;
    let store = S3Store::connect(&aws, s3).await;
    store
        .client()
        .create_bucket()
        .bucket("segnode-staging")
        .send()
        .await
        .unwrap();
    let sqs = SqsQueue::create_with_dead_letter(&aws, "segnode-jobs", 3, Duration::from_secs(60))
        .await
        .unwrap();
    let dlq = sqs.dead_letter_queue_url.clone().unwrap();
    let queue = SqsQueue::connect(&aws, sqs.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    make_series(
        &series,
        &[
            "--slices", "5", "--size", "64", "--seed", "700", "--series", "2",
        ],
    );
    let endpoint = moto.endpoint();
    let node = tokio::task::spawn_blocking({
        let data = dir.path().join("data");
        let url = sqs.queue_url.clone();
        move || {
            Node::start(
                "scp",
                &data,
                &[
                    "--quiet-period",
                    "3",
                    "--bucket",
                    "segnode-staging",
                    "--path-style",
                    "--queue-url",
                    &url,
                    "--dlq-url",
                    &dlq,
                    "--endpoint-url",
                    &endpoint,
                    "--region",
                    "us-east-1",
                ],
            )
        }
    })
    .await
    .unwrap();
    let (rc, out) = node.storescu("TESTSCU", &[], &series);
    assert_eq!(rc, 0, "{out}");

    let got = wait_until(Duration::from_secs(60), "a job on SQS", || {
        let rt = tokio::runtime::Handle::current();
        let q = queue.clone();
        let m = std::thread::spawn(move || {
            rt.block_on(q.receive(10, Duration::from_secs(60), Duration::from_secs(1)))
        })
        .join()
        .unwrap()
        .unwrap();
        (!m.is_empty()).then_some(m)
    });
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
    let results = store.list("results/").await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0]
        .as_str()
        .starts_with("results/2.25.293253754093074699753752768614597929384/"));
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
