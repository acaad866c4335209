//! The simulator on tiny crafted traces (exact waits and task-seconds), the plot, and the
//! issue's target on the bursty built-in trace.

use scaler::policy::PolicyConfig;
use scaler::sim::{self, service_times, simulate, Arrival, Builtin, SimConfig, Sizing, Trace};

fn trace(arrivals: &[(f64, f64)]) -> Trace {
    Trace {
        name: "crafted".into(),
        duration: 0.0,
        arrivals: arrivals
            .iter()
            .map(|&(at, s)| Arrival {
                at,
                service: Some(s),
            })
            .collect(),
    }
}

fn run(t: &Trace, sizing: Sizing) -> sim::Run {
    let config = SimConfig::default(); // start-up 60 s, decisions every 15 s
    let service = service_times(t, &config);
    simulate(t, &service, &config, &sizing, "run")
}

#[test]
fn a_fixed_pool_serves_in_order() {
    let r = run(
        &trace(&[(0.0, 10.0), (0.0, 10.0), (5.0, 10.0)]),
        Sizing::Fixed(1),
    );
    assert_eq!(r.waits, vec![0.0, 10.0, 15.0]);
    assert_eq!(r.horizon, 30.0);
    assert_eq!(r.task_seconds, 30.0);
}

#[test]
fn from_zero_one_study_waits_for_a_start_up_then_the_pool_goes_back_to_zero() {
    let policy = PolicyConfig {
        stabilisation_secs: 300.0,
        idle_secs: 600.0,
        cooldown_secs: 60.0,
        ..PolicyConfig::default()
    };
    let r = run(&trace(&[(0.0, 10.0)]), Sizing::Policy(policy));
    assert_eq!(
        r.waits,
        vec![60.0],
        "launched at the tick at 0, ready at 60"
    );
    // Busy (in flight) at the tick at 60, so idle from then: stopped at the tick at 660.
    assert_eq!((r.scale_outs, r.scale_ins), (1, 1));
    assert_eq!(r.task_seconds, 660.0);
    assert_eq!(r.horizon, 660.0, "the idle tail is billed");
}

#[test]
fn scale_in_stops_an_idle_task_never_a_busy_one() {
    let policy = PolicyConfig {
        target_per_task: 1.0,
        stabilisation_secs: 0.0,
        cooldown_secs: 0.0,
        idle_secs: 0.0,
        ..PolicyConfig::default()
    };
    // Two tasks from the tick at 0, ready at 60; the short job ends at 160, the long at 1060.
    let r = run(
        &trace(&[(0.0, 100.0), (0.0, 1000.0)]),
        Sizing::Policy(policy),
    );
    assert_eq!(r.waits, vec![60.0, 60.0]);
    assert_eq!(r.unfinished, 0);
    // The tick at 165 sees one in flight: the idle task goes (165 s billed); the busy one
    // finishes and goes at the tick at 1065.
    assert_eq!(r.task_seconds, 165.0 + 1065.0);
    assert_eq!((r.scale_outs, r.scale_ins), (1, 2));
}

#[test]
fn a_pool_that_cannot_wake_stops_after_a_week_and_says_so() {
    let policy = PolicyConfig {
        activation: 5,
        ..PolicyConfig::default()
    };
    let r = run(&trace(&[(0.0, 1.0)]), Sizing::Policy(policy));
    assert_eq!(r.unfinished, 1);
    assert_eq!(r.task_seconds, 0.0);
}

#[test]
fn bursty_trace_policy_beats_a_fixed_pool_of_at_least_its_cost() {
    // The target, with the default policy and workload: lower p95 wait than the
    // smallest fixed pool whose task-hours are at least the policy's.
    let t = Trace::builtin(Builtin::MorningPeak, 1);
    let runs = sim::compare(&t, &SimConfig::default(), &PolicyConfig::default());
    let policy = sim::summarise(&runs[0]);
    let fixed = sim::summarise(&runs[1]);
    assert!(
        fixed.task_hours >= policy.task_hours,
        "{fixed:?} vs {policy:?}"
    );
    assert!(
        policy.wait_p95 < fixed.wait_p95,
        "policy {policy:?} vs fixed {fixed:?}"
    );
    assert_eq!(policy.studies, t.arrivals.len());
    assert_eq!(policy.unfinished, 0);
}

#[test]
fn the_plot_is_a_png() {
    let t = Trace::builtin(Builtin::OutageFlood, 3);
    let runs = sim::compare(&t, &SimConfig::default(), &PolicyConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plot.png");
    sim::plot(&path, "outage-flood", &runs.iter().collect::<Vec<_>>()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 10_000,
        "a real picture, {} bytes",
        bytes.len()
    );
}
