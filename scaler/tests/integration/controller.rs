//! The controller over the embedded SQLite queue and a local worker pool: ticks grow the pool
//! with the backlog, in-flight jobs keep their workers, a drained queue shrinks it after the
//! window, and the pool never drops a busy worker. Time is passed in, so no test waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scaler::{
    Action, Controller, DryRun, LocalPoolTarget, PolicyConfig, Reason, ScaleTarget, WorkerPool,
};
use staging::{JobQueue, SqliteQueue};

/// A pool that keeps the WorkerPool contract: shrinking stops idle workers only.
#[derive(Default)]
struct FakePool {
    inner: Mutex<(usize, usize)>, // (size, busy)
    resizes: Mutex<Vec<usize>>,
}

impl FakePool {
    fn set_busy(&self, busy: usize) {
        let mut g = self.inner.lock().unwrap();
        g.1 = busy;
        g.0 = g.0.max(busy);
    }
}

impl WorkerPool for FakePool {
    fn size(&self) -> usize {
        self.inner.lock().unwrap().0
    }
    fn busy(&self) -> usize {
        self.inner.lock().unwrap().1
    }
    fn resize(&self, n: usize) {
        self.resizes.lock().unwrap().push(n);
        let mut g = self.inner.lock().unwrap();
        g.0 = n.max(g.1);
    }
}

fn policy() -> PolicyConfig {
    PolicyConfig {
        target_per_task: 2.0,
        min_tasks: 0,
        max_tasks: 5,
        max_step_out: None,
        stabilisation_secs: 60.0,
        cooldown_secs: 0.0,
        idle_secs: 120.0,
        activation: 1,
    }
}

#[tokio::test]
async fn the_local_pool_follows_the_sqlite_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqliteQueue::open(dir.path().join("queue.sqlite"), 3).unwrap());
    let pool = Arc::new(FakePool::default());
    let target = Arc::new(LocalPoolTarget::new(pool.clone()));
    let mut c = Controller::new(queue.clone(), target, policy());

    let d = c.tick(0.0).await.unwrap();
    assert_eq!((d.desired, d.action), (0, Action::Hold));

    for i in 0..7 {
        queue.send(&format!("job {i}"), None).await.unwrap();
    }
    let d = c.tick(10.0).await.unwrap();
    assert_eq!((d.backlog, d.desired, d.action), (7, 4, Action::ScaleOut));
    assert_eq!(pool.size(), 4);

    // Workers take three jobs (in flight) and finish the other four.
    let got = queue
        .receive(7, Duration::from_secs(600), Duration::ZERO)
        .await
        .unwrap();
    for m in &got[3..] {
        queue.delete(&m.receipt).await.unwrap();
    }
    pool.set_busy(3);
    let d = c.tick(20.0).await.unwrap();
    assert_eq!(d.backlog, 3, "in-flight jobs count");
    assert_eq!((d.desired, d.reason), (4, Reason::Stabilising));

    // After the window, down to what the in-flight jobs need.
    let d = c.tick(75.0).await.unwrap();
    assert_eq!((d.desired, d.action), (2, Action::ScaleIn));
    assert_eq!(pool.size(), 3, "the pool keeps its three busy workers");

    for m in &got[..3] {
        queue.delete(&m.receipt).await.unwrap();
    }
    pool.set_busy(0);
    let d = c.tick(80.0).await.unwrap();
    assert_eq!(pool.size(), 2, "{d:?}");
    // The window has forgotten t = 75, but the last work was then: one worker stays until
    // the pool has been idle 120 s, at t = 195.
    let d = c.tick(190.0).await.unwrap();
    assert_eq!((d.desired, d.reason), (1, Reason::Stabilised));
    let d = c.tick(192.0).await.unwrap();
    assert_eq!((d.desired, d.reason), (1, Reason::NotIdleYet));
    let d = c.tick(195.0).await.unwrap();
    assert_eq!((d.desired, d.reason), (0, Reason::Idle));
    assert_eq!(pool.size(), 0);
    assert_eq!(*pool.resizes.lock().unwrap(), vec![4, 2, 2, 1, 0]);

    let m = c.metrics();
    assert_eq!(m.decisions(Action::ScaleOut), 1);
    assert_eq!(m.decisions(Action::ScaleIn), 4);
    assert_eq!(m.decisions(Action::Hold), 3);
    let mut text = String::new();
    m.render(&mut text);
    assert!(text.contains("segnode_scaler_desired_tasks 0\n"), "{text}");
    assert!(text.contains("segnode_scaler_decisions_total{action=\"scale_out\"} 1\n"));
    assert!(text.contains("segnode_scaler_backlog{state=\"in_flight\"} 0\n"));
}

#[tokio::test]
async fn dry_run_only_remembers_and_state_can_be_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqliteQueue::open(dir.path().join("queue.sqlite"), 3).unwrap());
    for i in 0..3 {
        queue.send(&format!("job {i}"), None).await.unwrap();
    }
    let target = Arc::new(DryRun::new(0));
    let mut c = Controller::new(queue.clone(), target.clone(), policy());
    let d = c.tick(0.0).await.unwrap();
    assert_eq!(d.desired, 2);
    assert_eq!(target.desired().await.unwrap(), 2);

    // A second controller started from the first's state (as `tick` mode does) keeps the
    // window: the queue empties, yet it holds.
    let got = queue
        .receive(3, Duration::from_secs(600), Duration::ZERO)
        .await
        .unwrap();
    for m in got {
        queue.delete(&m.receipt).await.unwrap();
    }
    let mut c2 = Controller::new(queue, target, policy()).with_state(c.state().clone());
    let d = c2.tick(30.0).await.unwrap();
    assert_eq!((d.desired, d.reason), (2, Reason::Stabilising));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_loop_resizes_a_live_pool_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(SqliteQueue::open(dir.path().join("queue.sqlite"), 3).unwrap());
    let pool = Arc::new(FakePool::default());
    let controller = Controller::new(
        queue.clone(),
        Arc::new(LocalPoolTarget::new(pool.clone())),
        policy(),
    );
    let metrics = controller.metrics();
    for i in 0..3 {
        queue.send(&format!("job {i}"), None).await.unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // What `segnode serve` does with its worker pool: spawn the loop beside it.
    let handle = tokio::spawn(controller.run(Duration::from_millis(20), async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool.size() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop never grew the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
    assert_eq!(metrics.decisions(Action::ScaleOut), 1);
    assert_eq!(metrics.errors(), 0);
}
