//! The local-folder store: atomic replace, listing, no stray temporaries.

use bytes::Bytes;
use staging::{LocalStore, ObjectKey, ObjectStore, StoreError, Uid};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

#[tokio::test]
async fn put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let (st, se) = (Uid::new("1.2.3").unwrap(), Uid::new("1.2.3.4").unwrap());
    for i in 0..3 {
        let k = ObjectKey::incoming(&st, &se, &Uid::new(&format!("1.2.3.4.{i}")).unwrap());
        store.put(&k, Bytes::from(vec![i as u8; 10])).await.unwrap();
    }
    store
        .put(&key("results/1.2.3/9.9.dcm"), Bytes::from_static(b"seg"))
        .await
        .unwrap();
    let listed = store.list("incoming/1.2.3/").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1].as_str(), "incoming/1.2.3/1.2.3.4/1.2.3.4.1.dcm");
    assert!(
        store.list("incoming/1.2.3.9/").await.unwrap().is_empty(),
        "prefix of a sibling study"
    );
    assert_eq!(
        store.get(&listed[2]).await.unwrap(),
        Bytes::from(vec![2u8; 10])
    );
    store
        .put(&listed[2], Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&listed[2]).await.unwrap(),
        Bytes::from_static(b"replaced")
    );
    store.delete(&listed[2]).await.unwrap();
    store.delete(&listed[2]).await.unwrap();
    assert!(matches!(
        store.get(&listed[2]).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!store.exists(&listed[2]).await.unwrap());
    // No temporary file is left behind in any folder.
    let names: Vec<String> = walk(&dir.path().join("store"));
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[tokio::test]
async fn put_file_stages_a_spooled_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let src = dir.path().join("spooled.dcm");
    std::fs::write(&src, b"DICM-ish").unwrap();
    let k = key("incoming/1/2/3.dcm");
    store.put_file(&k, &src).await.unwrap();
    std::fs::remove_file(&src).unwrap();
    assert_eq!(
        store.get(&k).await.unwrap(),
        Bytes::from_static(b"DICM-ish")
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn study_job(n: usize) -> staging::Job {
    let st = Uid::new("1.2.826.0.1.3680043.10.1511.1.9").unwrap();
    let objects = (0..n)
        .map(|i| {
            let se = Uid::new(&format!("{st}.{}", 1 + i % 3)).unwrap();
            let so = Uid::new(&format!("{se}.{i}")).unwrap();
            staging::JobObject {
                key: ObjectKey::incoming(&st, &se, &so),
                series_uid: se,
                sop_uid: so,
            }
        })
        .collect();
    staging::Job::new(st, objects, Some("SCANNER".into()), 7)
}

#[tokio::test]
async fn a_job_too_big_for_a_message_travels_as_a_manifest_beside_the_study() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();

    // A small job stays inline (version 1): older workers read it, no object is written.
    let small = study_job(10);
    let text = small.to_message(&store).await.unwrap();
    assert!(text.contains("\"version\":1"), "{text}");
    assert!(store.list("incoming/").await.unwrap().is_empty());
    assert_eq!(
        staging::Job::from_message(&text, &store).await.unwrap(),
        small
    );

    // 3,000 instances: the inline form is far over SQS's 256 KiB; the message stays small.
    let big = study_job(3000);
    assert!(big.to_json().len() > 256 * 1024, "{}", big.to_json().len());
    let text = big.to_message(&store).await.unwrap();
    assert!(text.len() < 1024, "{} bytes: {text}", text.len());
    assert!(text.contains("\"version\":2"), "{text}");
    let header = staging::Job::from_json(&text).unwrap();
    assert!(header.objects.is_empty());
    assert_eq!(header.object_count(), 3000);
    let manifest = header.manifest.clone().unwrap().key;
    assert_eq!(
        manifest.as_str(),
        format!("incoming/{}/jobs/{}.json", big.study_uid, big.job_id)
    );
    assert_eq!(manifest.parse_incoming(), None, "not taken for an instance");
    let back = staging::Job::from_message(&text, &store).await.unwrap();
    assert_eq!(back.objects, big.objects, "all 3,000 keys, in order");
    assert_eq!(back.job_id, big.job_id);
    assert_eq!(back.calling_ae.as_deref(), Some("SCANNER"));

    // A manifest changed after the message was written is refused, not half-used.
    let mut bytes = store.get(&manifest).await.unwrap().to_vec();
    let at = bytes.len() - 20;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    store.put(&manifest, Bytes::from(bytes)).await.unwrap();
    let err = staging::Job::from_message(&text, &store).await.unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(!err.is_transient());
    // A missing one is a clear, permanent error.
    store.delete(&manifest).await.unwrap();
    let err = staging::Job::from_message(&text, &store).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // A pointer outside the study's jobs/ folder is refused before anything is read.
    let evil = text.replace(
        &format!("incoming/{}/jobs/", big.study_uid),
        "results/1.2/jobs/",
    );
    let err = staging::Job::from_json(&evil).unwrap_err();
    assert!(err.to_string().contains("is not under"), "{err}");
}

/// Issue 13 item 10: the store remembers the folders it made durable; a folder deleted under
/// it (or the whole store folder) made every later write there fail for the life of the
/// process ("No such file or directory", staging retried forever). Now it is made again.
#[tokio::test]
async fn a_deleted_store_folder_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("store")).unwrap();
    let a = key("incoming/1.2.3/1.2.3.4/1.2.3.4.1.dcm");
    let b = key("incoming/1.2.3/1.2.3.4/1.2.3.4.2.dcm");
    store.put(&a, Bytes::from_static(b"one")).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("store/incoming")).unwrap();
    store.put(&b, Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(store.get(&b).await.unwrap(), Bytes::from_static(b"two"));
    assert!(matches!(store.get(&a).await, Err(StoreError::NotFound(_))));
    // The store's root itself.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    let src = dir.path().join("src.dcm");
    std::fs::write(&src, b"three").unwrap();
    store.put_file(&a, &src).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), Bytes::from_static(b"three"));
}
