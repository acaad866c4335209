//! The embedded queue's at-least-once semantics, on a real SQLite file.

use std::time::Duration;

use staging::{JobQueue, QueueError, SqliteQueue};

const LONG: Duration = Duration::from_secs(60);
const NOW: Duration = Duration::ZERO;

fn queue(max_receives: u32) -> (tempfile::TempDir, SqliteQueue) {
    let dir = tempfile::tempdir().unwrap();
    let q = SqliteQueue::open(dir.path().join("queue.sqlite"), max_receives).unwrap();
    (dir, q)
}

#[tokio::test]
async fn a_received_message_is_hidden_until_its_visibility_expires() {
    let (_d, q) = queue(3);
    q.send("job-a", None).await.unwrap();
    let got = q
        .receive(10, Duration::from_millis(300), NOW)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "job-a");
    assert_eq!(got[0].receive_count, 1);
    assert!(
        q.receive(10, LONG, NOW).await.unwrap().is_empty(),
        "in flight, so not visible"
    );
    let b = q.backlog().await.unwrap();
    assert_eq!((b.visible, b.in_flight), (0, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = q.receive(10, LONG, NOW).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "a worker that never deleted it lets it reappear"
    );
    assert_eq!(again[0].receive_count, 2);
    // The first receipt is stale now: its holder must not delete the new holder's work.
    assert!(matches!(
        q.delete(&got[0].receipt).await,
        Err(QueueError::StaleReceipt(_))
    ));
    q.delete(&again[0].receipt).await.unwrap();
    assert_eq!(q.backlog().await.unwrap().total(), 0);
}

#[tokio::test]
async fn extend_keeps_a_long_job_hidden() {
    let (_d, q) = queue(3);
    q.send("slow", None).await.unwrap();
    let got = q.receive(1, Duration::from_millis(300), NOW).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        q.extend(&got[0].receipt, Duration::from_millis(300))
            .await
            .unwrap();
    }
    assert!(q.receive(1, LONG, NOW).await.unwrap().is_empty());
    q.delete(&got[0].receipt).await.unwrap();
}

#[tokio::test]
async fn after_max_receives_a_message_goes_to_the_dead_letter_table() {
    let (_d, q) = queue(2);
    q.send("poison", None).await.unwrap();
    for expected in 1..=2 {
        let got = q.receive(1, LONG, NOW).await.unwrap();
        assert_eq!(got[0].receive_count, expected);
        q.release(&got[0].receipt, NOW).await.unwrap();
    }
    assert!(q.receive(1, LONG, NOW).await.unwrap().is_empty());
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert!(dead[0].reason.contains("2 times"), "{}", dead[0].reason);
    assert_eq!(q.backlog().await.unwrap().total(), 0);
}

#[tokio::test]
async fn explicit_dead_letter_keeps_the_reason() {
    let (_d, q) = queue(5);
    q.send("no-flair", None).await.unwrap();
    let got = q.receive(1, LONG, NOW).await.unwrap();
    q.dead_letter(&got[0], "no FLAIR series found; series present: T1, T2")
        .await
        .unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(
        dead[0].reason,
        "no FLAIR series found; series present: T1, T2"
    );
    assert!(q.receive(1, LONG, NOW).await.unwrap().is_empty());
}

#[tokio::test]
async fn dedup_id_drops_a_resent_job_and_messages_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    {
        let q = SqliteQueue::open(&path, 3).unwrap();
        q.send("job-1", Some("id-1")).await.unwrap();
        q.send("job-1", Some("id-1")).await.unwrap();
        q.send("job-2", Some("id-2")).await.unwrap();
    }
    let q = SqliteQueue::open(&path, 3).unwrap();
    let got = q.receive(10, LONG, NOW).await.unwrap();
    let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["job-1", "job-2"]);
}

#[tokio::test]
async fn long_poll_wakes_on_send() {
    let (_d, q) = queue(3);
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.receive(1, LONG, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.send("late", None).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woke up")
        .unwrap()
        .unwrap();
    assert_eq!(got[0].body, "late");
}

#[tokio::test]
async fn two_processes_sharing_the_file_never_get_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    let a = SqliteQueue::open(&path, 3).unwrap();
    let b = SqliteQueue::open(&path, 3).unwrap();
    for i in 0..50 {
        a.send(&format!("m{i}"), None).await.unwrap();
    }
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    loop {
        let (ra, rb) = tokio::join!(a.receive(3, LONG, NOW), b.receive(3, LONG, NOW));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        if ra.is_empty() && rb.is_empty() {
            break;
        }
        seen_a.extend(ra.into_iter().map(|m| m.body));
        seen_b.extend(rb.into_iter().map(|m| m.body));
    }
    let mut all: Vec<_> = seen_a.iter().chain(&seen_b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50);
    assert_eq!(seen_a.len() + seen_b.len(), 50);
}
