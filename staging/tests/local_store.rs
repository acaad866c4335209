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
