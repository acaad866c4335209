//! `segnode scp` at scale: a study sent by storescu ends as objects in the S3 bucket and one
//! job message on SQS (moto server on loopback, real SDK calls from the binary).

use std::time::Duration;

use staging::{AwsSettings, Job, JobQueue, ObjectStore, S3Settings, S3Store, SqsQueue};
use testkit::{make_series, wait_until, Moto, Node};

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
