//! How long a worker takes to read one study's objects from S3 (the moto server on loopback)
//! and from a local folder (what a worker on an FSx for Lustre mount does with
//! `--store file:///fsx/segnode`), through the calls the worker makes for an upload: `list` of
//! the folder, then `get_to_file` of every object into a fresh temporary folder. Rounds
//! alternate between the two stores; prints each round, the medians and the ratio.
//!
//!     cargo run -p staging --example read_study -- STUDY_DIR [ROUNDS]
//!
//! Caveats (deploy/README.md): moto on loopback has no network latency or bandwidth limit, so
//! the S3 figure is a floor of real S3's; the local folder is in the page cache after the first
//! round, as recently imported FSx files are in Lustre's client cache.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use staging::{AwsSettings, LocalStore, ObjectKey, ObjectStore, S3Settings, S3Store};

async fn read_all(store: &dyn ObjectStore, prefix: &str, out: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let keys = store.list(prefix).await.unwrap();
    let mut bytes = 0;
    for (i, k) in keys.iter().enumerate() {
        bytes += store
            .get_to_file(k, &out.join(i.to_string()), u64::MAX)
            .await
            .unwrap();
    }
    (started.elapsed(), bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let study = PathBuf::from(args.get(1).expect("usage: read_study STUDY_DIR [ROUNDS]"));
    let rounds: usize = args.get(2).map(|r| r.parse().unwrap()).unwrap_or(5);
    let files = testkit::named_files(&study);
    assert!(!files.is_empty(), "no files under {}", study.display());

    let moto = testkit::Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let mut settings = S3Settings::new("bench");
    settings.force_path_style = true;
    let s3 = S3Store::connect(&aws, settings).await;
    s3.client()
        .create_bucket()
        .bucket("bench")
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(dir.path().join("fsx")).unwrap();
    let prefix = "uploads/case/";
    for (name, data) in &files {
        let key = ObjectKey::new(format!("{prefix}{name}")).unwrap();
        s3.put(&key, data.clone().into()).await.unwrap();
        local.put(&key, data.clone().into()).await.unwrap();
    }
    let (mut t_s3, mut t_local) = (Vec::new(), Vec::new());
    let mut total = 0;
    for round in 1..=rounds {
        for (name, store, times) in [
            ("s3 (moto)", &s3 as &dyn ObjectStore, &mut t_s3),
            ("local folder", &local as &dyn ObjectStore, &mut t_local),
        ] {
            let out = tempfile::tempdir().unwrap();
            let (d, bytes) = read_all(store, prefix, out.path()).await;
            total = bytes;
            println!(
                "round {round} {name:<13} {:>8.1} ms  {} objects, {:.1} MB",
                d.as_secs_f64() * 1e3,
                files.len(),
                bytes as f64 / 1e6
            );
            times.push(d.as_secs_f64());
        }
    }
    let (s, l) = (median(t_s3), median(t_local));
    println!(
        "median per study ({} objects, {:.1} MB): s3 (moto) {:.1} ms, local folder {:.1} ms, ratio s3/local {:.1}",
        files.len(),
        total as f64 / 1e6,
        s * 1e3,
        l * 1e3,
        s / l
    );
}
