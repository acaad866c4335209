//! The S3 store and the SQS queue against a real moto server on loopback, through the real SDK.

use std::time::Duration;

use bytes::Bytes;
use staging::{
    AwsSettings, JobQueue, ObjectKey, ObjectStore, S3Settings, S3Store, SqsQueue, StoreError,
};
use testkit::Moto;

fn aws(moto: &Moto) -> AwsSettings {
    AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    }
}

async fn bucket(moto: &Moto, name: &str) -> S3Store {
    let mut settings = S3Settings::new(name);
    settings.force_path_style = true;
    settings.prefix = "node-a/".into();
    settings.multipart_threshold = 6 * 1024 * 1024;
    settings.part_size = 5 * 1024 * 1024;
    let store = S3Store::connect(&aws(moto), settings).await;
    store
        .client()
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_round_trips_small_and_multipart_objects() {
    let moto = Moto::start();
    let store = bucket(&moto, "segnode-test").await;
    let small = ObjectKey::new("incoming/1.2/1.3/1.4.dcm").unwrap();
    store
        .put(&small, Bytes::from_static(b"small"))
        .await
        .unwrap();
    assert!(store.exists(&small).await.unwrap());
    assert_eq!(
        store.get(&small).await.unwrap(),
        Bytes::from_static(b"small")
    );

    // 11 MiB: three parts of 5, 5 and 1 MiB, from memory and from a file.
    let big: Vec<u8> = (0..11 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let k_mem = ObjectKey::new("incoming/1.2/1.3/1.5.dcm").unwrap();
    store.put(&k_mem, Bytes::from(big.clone())).await.unwrap();
    assert_eq!(store.get(&k_mem).await.unwrap().as_ref(), big.as_slice());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.dcm");
    std::fs::write(&f, &big).unwrap();
    let k_file = ObjectKey::new("incoming/1.2/1.3/1.6.dcm").unwrap();
    store.put_file(&k_file, &f).await.unwrap();
    assert_eq!(store.get(&k_file).await.unwrap().as_ref(), big.as_slice());

    let listed: Vec<String> = store
        .list("incoming/1.2/")
        .await
        .unwrap()
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "incoming/1.2/1.3/1.4.dcm",
            "incoming/1.2/1.3/1.5.dcm",
            "incoming/1.2/1.3/1.6.dcm"
        ]
    );
    // The bucket prefix is applied on the wire and hidden from callers.
    let raw = store
        .client()
        .list_objects_v2()
        .bucket("segnode-test")
        .send()
        .await
        .unwrap();
    assert!(raw
        .contents()
        .iter()
        .all(|o| o.key().unwrap().starts_with("node-a/incoming/")));

    store.delete(&small).await.unwrap();
    assert!(matches!(
        store.get(&small).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_queue_has_the_same_semantics_as_the_embedded_one() {
    let moto = Moto::start();
    let settings =
        SqsQueue::create_with_dead_letter(&aws(&moto), "jobs", 2, Duration::from_secs(30))
            .await
            .unwrap();
    let q = SqsQueue::connect(&aws(&moto), settings).await;
    q.send("job-1", Some("d1")).await.unwrap();
    q.send("job-2", None).await.unwrap();

    let got = q
        .receive(10, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let b = q.backlog().await.unwrap();
    assert_eq!(
        (b.visible, b.in_flight),
        (0, 2),
        "in-flight messages count for the scaler"
    );
    let (one, two) = if got[0].body == "job-1" {
        (&got[0], &got[1])
    } else {
        (&got[1], &got[0])
    };
    assert_eq!(one.receive_count, 1);
    q.extend(&one.receipt, Duration::from_secs(120))
        .await
        .unwrap();
    q.delete(&one.receipt).await.unwrap();

    // A non-retryable failure goes to the DLQ at once, with its reason.
    q.dead_letter(two, "no FLAIR series found").await.unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "job-2");
    assert_eq!(dead[0].reason, "no FLAIR series found");
    assert_eq!(q.backlog().await.unwrap().total(), 0);

    // The redrive policy moves a message received max_receives times.
    q.send("poison", None).await.unwrap();
    for n in 1..=2 {
        let m = q
            .receive(1, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(m.len(), 1, "receive {n}");
        assert_eq!(m[0].receive_count, n);
        q.release(&m[0].receipt, Duration::ZERO).await.unwrap();
    }
    assert!(q
        .receive(1, Duration::from_secs(60), Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert!(dead.iter().any(|d| d.body == "poison"), "{dead:?}");
}
