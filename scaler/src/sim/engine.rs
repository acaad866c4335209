//! The discrete-event simulation: studies arrive, wait in a FIFO queue, and are segmented one
//! at a time per task; tasks take `startup_secs` to become ready; the policy decides every
//! `interval_secs` on visible + in-flight, as the real scaler does. A task asked to stop
//! while it holds a job finishes the job first (scale-in protection); a starting or idle one
//! stops at once. Tasks are billed from launch to stop.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use super::rng::{LogNormal, Rng};
use super::trace::Trace;
use crate::policy::{decide, Action, PolicyConfig, PolicyState};

/// How the simulated workload behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Service time of a study without one in the trace.
    pub service: LogNormal,
    /// Seconds from launching a task to its first job (image pull, model load).
    pub startup_secs: f64,
    /// Seconds between policy decisions.
    pub interval_secs: f64,
    /// Seed for the service times.
    pub seed: u64,
    /// Resolution of the time series kept for the plot.
    pub sample_secs: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            service: LogNormal::from_median_p90(12.0, 25.0).expect("valid"),
            startup_secs: 60.0,
            interval_secs: 15.0,
            seed: 1,
            sample_secs: 60.0,
        }
    }
}

/// What sizes the pool.
#[derive(Debug, Clone, PartialEq)]
pub enum Sizing {
    Policy(PolicyConfig),
    /// This many tasks, warm from the start, for the whole run.
    Fixed(u32),
}

/// One point of the time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: f64,
    /// Waiting (visible) studies.
    pub queued: u64,
    /// Studies being segmented (in flight).
    pub busy: u64,
    /// Tasks billed now (starting, ready or finishing a last job).
    pub tasks: u32,
}

/// The outcome of one simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub label: String,
    /// Arrival time of each study.
    pub arrivals: Vec<f64>,
    /// Queue wait of each study (arrival to start of segmentation), same order.
    pub waits: Vec<f64>,
    /// Seconds simulated: the trace, until its last study is done, and for a policy until it
    /// has scaled in to its floor (the idle tail is billed).
    pub horizon: f64,
    /// Sum over tasks of seconds from launch to stop.
    pub task_seconds: f64,
    pub samples: Vec<Sample>,
    pub scale_outs: u32,
    pub scale_ins: u32,
    /// Studies never started within a week after the trace (a pool that cannot wake up);
    /// their wait counts as the whole time they waited.
    pub unfinished: usize,
}

impl Run {
    pub fn task_hours(&self) -> f64 {
        self.task_seconds / 3600.0
    }
    /// Average tasks billed over the horizon.
    pub fn mean_tasks(&self) -> f64 {
        if self.horizon > 0.0 {
            self.task_seconds / self.horizon
        } else {
            0.0
        }
    }
}

/// The service time of each study: the trace's own, or drawn (seeded) from `config.service`.
/// The same draw serves every sizing compared on one trace, so differences are the policy's.
pub fn service_times(trace: &Trace, config: &SimConfig) -> Vec<f64> {
    let mut rng = Rng::new(config.seed ^ 0x5E6_A0DE);
    trace
        .arrivals
        .iter()
        .map(|a| {
            let drawn = config.service.sample(&mut rng);
            a.service.unwrap_or(drawn)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Arrival(usize),
    Ready(usize),
    Done(usize),
    Tick,
    Sample,
}

/// Time-ordered, then by insertion order.
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64, u64, Event);

impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

#[derive(Debug, Clone)]
struct Task {
    launched: f64,
    ready: bool,
    job: Option<usize>,
    retiring: bool,
    stopped: Option<f64>,
}

struct World<'a> {
    arrivals: Vec<f64>,
    service: &'a [f64],
    events: BinaryHeap<Reverse<At>>,
    seq: u64,
    queue: VecDeque<usize>,
    tasks: Vec<Task>,
    /// Indices of tasks not stopped.
    alive: Vec<usize>,
    waits: Vec<f64>,
    done: usize,
    last_done: f64,
    last_stop: f64,
}

impl World<'_> {
    fn schedule(&mut self, t: f64, e: Event) {
        self.seq += 1;
        self.events.push(Reverse(At(t, self.seq, e)));
    }

    fn launch(&mut self, now: f64, startup: f64) {
        let id = self.tasks.len();
        self.tasks.push(Task {
            launched: now,
            ready: false,
            job: None,
            retiring: false,
            stopped: None,
        });
        self.alive.push(id);
        self.schedule(now + startup, Event::Ready(id));
    }

    fn stop(&mut self, now: f64, id: usize) {
        self.tasks[id].stopped = Some(now);
        self.last_stop = now;
        self.alive.retain(|&t| t != id);
    }

    fn busy(&self) -> u64 {
        self.alive
            .iter()
            .filter(|&&t| self.tasks[t].job.is_some())
            .count() as u64
    }

    /// Tasks the target would report: alive and not asked to stop.
    fn counted(&self) -> u32 {
        self.alive
            .iter()
            .filter(|&&t| !self.tasks[t].retiring)
            .count() as u32
    }

    fn dispatch(&mut self, now: f64) {
        while !self.queue.is_empty() {
            let Some(&id) = self.alive.iter().find(|&&t| {
                let k = &self.tasks[t];
                k.ready && !k.retiring && k.job.is_none()
            }) else {
                return;
            };
            let job = self.queue.pop_front().expect("not empty");
            self.waits[job] = now - self.arrivals[job];
            self.tasks[id].job = Some(job);
            let end = now + self.service[job];
            self.schedule(end, Event::Done(id));
        }
    }

    /// Bring the counted tasks to `desired`.
    fn resize(&mut self, now: f64, desired: u32, startup: f64) {
        let mut current = self.counted();
        // Growing: keep tasks that were finishing a last job, then launch new ones.
        while current < desired {
            if let Some(&id) = self.alive.iter().find(|&&t| self.tasks[t].retiring) {
                self.tasks[id].retiring = false;
            } else {
                self.launch(now, startup);
            }
            current += 1;
        }
        // Shrinking: starting tasks first (newest first), then idle ones, then busy ones
        // finish their job before they stop.
        while current > desired {
            let pick = |w: &World, f: &dyn Fn(&Task) -> bool| {
                w.alive
                    .iter()
                    .rev()
                    .copied()
                    .find(|&t| !w.tasks[t].retiring && f(&w.tasks[t]))
            };
            if let Some(id) = pick(self, &|k| !k.ready).or_else(|| pick(self, &|k| k.job.is_none()))
            {
                self.stop(now, id);
            } else if let Some(id) = pick(self, &|_| true) {
                self.tasks[id].retiring = true;
            }
            current -= 1;
        }
        self.dispatch(now);
    }
}

/// Simulate `trace` with pre-drawn `service` times under `sizing`.
pub fn simulate(
    trace: &Trace,
    service: &[f64],
    config: &SimConfig,
    sizing: &Sizing,
    label: &str,
) -> Run {
    assert_eq!(
        service.len(),
        trace.arrivals.len(),
        "one service time per arrival"
    );
    let n = trace.arrivals.len();
    let mut w = World {
        arrivals: trace.arrivals.iter().map(|a| a.at).collect(),
        service,
        events: BinaryHeap::new(),
        seq: 0,
        queue: VecDeque::new(),
        tasks: Vec::new(),
        alive: Vec::new(),
        waits: vec![f64::NAN; n],
        done: 0,
        last_done: 0.0,
        last_stop: 0.0,
    };
    for i in 0..n {
        let at = w.arrivals[i];
        w.schedule(at, Event::Arrival(i));
    }
    let mut policy = None;
    match sizing {
        Sizing::Fixed(k) => {
            for _ in 0..*k {
                w.launch(0.0, 0.0);
            }
        }
        Sizing::Policy(p) => {
            policy = Some((p, PolicyState::default()));
            w.schedule(0.0, Event::Tick);
        }
    }
    w.schedule(0.0, Event::Sample);
    let (mut outs, mut ins) = (0, 0);
    let mut samples = Vec::new();
    // A pool that never wakes (activation above what arrives) must not loop for ever.
    let cap = trace.duration + 7.0 * 86_400.0;
    let mut horizon = cap;
    while let Some(Reverse(At(now, _, event))) = w.events.pop() {
        // The end: the trace is over and its last study done; a policy also gets to scale
        // in to its floor, and the idle tail it pays for counts.
        let floor = policy.as_ref().map_or(u32::MAX, |(p, _)| p.min_tasks);
        if w.done == n && now >= trace.duration && w.alive.len() as u32 <= floor {
            horizon = trace.duration.max(w.last_done).max(w.last_stop);
            break;
        }
        if now > cap {
            break;
        }
        match event {
            Event::Arrival(i) => {
                w.queue.push_back(i);
                w.dispatch(now);
            }
            Event::Ready(id) => {
                if w.tasks[id].stopped.is_none() {
                    w.tasks[id].ready = true;
                    w.dispatch(now);
                }
            }
            Event::Done(id) => {
                w.tasks[id].job = None;
                w.done += 1;
                w.last_done = now;
                if w.tasks[id].retiring {
                    w.stop(now, id);
                } else {
                    w.dispatch(now);
                }
            }
            Event::Tick => {
                if let Some((p, state)) = policy.as_mut() {
                    let backlog = w.queue.len() as u64 + w.busy();
                    let d = decide(p, state, now, backlog, w.counted());
                    match d.action {
                        Action::Hold => {}
                        Action::ScaleOut => outs += 1,
                        Action::ScaleIn => ins += 1,
                    }
                    if d.action != Action::Hold {
                        w.resize(now, d.desired, config.startup_secs);
                    }
                }
                w.schedule(now + config.interval_secs, Event::Tick);
            }
            Event::Sample => {
                samples.push(Sample {
                    t: now,
                    queued: w.queue.len() as u64,
                    busy: w.busy(),
                    tasks: w.alive.len() as u32,
                });
                w.schedule(now + config.sample_secs, Event::Sample);
            }
        }
    }
    let mut unfinished = 0;
    for (wait, at) in w.waits.iter_mut().zip(&w.arrivals) {
        if wait.is_nan() {
            *wait = horizon - at;
            unfinished += 1;
        }
    }
    let task_seconds = w
        .tasks
        .iter()
        .map(|k| k.stopped.unwrap_or(horizon).min(horizon) - k.launched)
        .sum();
    Run {
        label: label.to_string(),
        arrivals: w.arrivals,
        waits: w.waits,
        horizon,
        task_seconds,
        samples,
        scale_outs: outs,
        scale_ins: ins,
        unfinished,
    }
}
