//! The policy on crafted backlog series: burst, noise, drain, zero, in-flight, bounds.
//! Each series is fed tick by tick to a target that obeys, and the decisions are checked.

use scaler::policy::{decide, Action, Decision, PolicyConfig, PolicyState, Reason};
use staging::Backlog;

/// Feed `(time, backlog)` to the policy starting at `current` tasks, applying each decision.
fn replay(
    config: &PolicyConfig,
    state: &mut PolicyState,
    mut current: u32,
    series: &[(f64, u64)],
) -> Vec<Decision> {
    series
        .iter()
        .map(|&(t, b)| {
            let d = decide(config, state, t, b, current);
            if d.action == Action::Hold {
                assert_eq!(d.desired, current, "a hold keeps the count: {d:?}");
            }
            current = d.desired;
            d
        })
        .collect()
}

fn counts(ds: &[Decision]) -> Vec<u32> {
    ds.iter().map(|d| d.desired).collect()
}

/// Ticks every `step` seconds from `t0` over the given backlogs.
fn ticks(t0: f64, step: f64, backlogs: &[u64]) -> Vec<(f64, u64)> {
    backlogs
        .iter()
        .enumerate()
        .map(|(i, &b)| (t0 + step * i as f64, b))
        .collect()
}

fn config() -> PolicyConfig {
    PolicyConfig {
        target_per_task: 2.0,
        min_tasks: 0,
        max_tasks: 10,
        max_step_out: None,
        stabilisation_secs: 60.0,
        cooldown_secs: 0.0,
        idle_secs: 120.0,
        activation: 1,
    }
}

#[test]
fn burst_scales_out_at_once_and_stops_at_max() {
    let c = config();
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 10.0, &[0, 1, 15, 30, 9]));
    assert_eq!(counts(&ds), vec![0, 1, 8, 10, 10]);
    assert_eq!(ds[0].reason, Reason::Steady);
    assert_eq!(
        (ds[1].action, ds[1].reason),
        (Action::ScaleOut, Reason::Backlog)
    );
    assert_eq!(ds[2].recommendation, 8, "ceil(15 / 2)");
    assert_eq!(
        ds[3].recommendation, 10,
        "ceil(30 / 2) = 15, clamped to max"
    );
    assert_eq!(
        (ds[4].action, ds[4].reason),
        (Action::Hold, Reason::Stabilising)
    );
}

#[test]
fn step_limit_climbs_in_steps() {
    let c = PolicyConfig {
        max_step_out: Some(3),
        ..config()
    };
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 10.0, &[20, 20, 20, 20, 20]));
    assert_eq!(counts(&ds), vec![3, 6, 9, 10, 10]);
    assert_eq!(ds[0].reason, Reason::StepLimited);
    assert_eq!(ds[3].reason, Reason::Backlog);
}

#[test]
fn noise_only_ever_moves_the_count_up_to_its_peaks() {
    let c = PolicyConfig {
        target_per_task: 3.0,
        ..config()
    };
    let mut s = PolicyState::default();
    // Ten minutes of a backlog wobbling between 7 and 12 (2 to 4 tasks' worth), every 5 s.
    let noise = [9, 12, 8, 11, 7, 10, 12, 9, 8, 11, 10, 7];
    let backlogs: Vec<u64> = noise.iter().cycle().take(120).copied().collect();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 5.0, &backlogs));
    let changes: Vec<_> = ds.iter().filter(|d| d.action != Action::Hold).collect();
    assert!(
        ds.iter().all(|d| d.action != Action::ScaleIn),
        "never scales in while the noise goes on"
    );
    assert_eq!(counts(&ds)[1..3], [4, 4], "up to the peak at the first 12");
    assert_eq!(changes.len(), 2, "3 then 4, then holds: {changes:?}");
    assert_eq!(*counts(&ds).last().unwrap(), 4);
}

#[test]
fn drain_comes_down_after_the_window_then_to_zero_after_idle() {
    let c = config(); // window 60 s, idle 120 s, cooldown 0
    let mut s = PolicyState::default();
    // 20 messages for 30 s (10 tasks), then the queue empties at t = 30 and stays empty.
    let mut series = ticks(0.0, 10.0, &[20, 20, 20]);
    series.extend(ticks(30.0, 10.0, &[4; 1]));
    series.extend(ticks(40.0, 10.0, &[0; 20]));
    let ds = replay(&c, &mut s, 0, &series);
    let at = |t: f64| {
        ds.iter()
            .zip(&series)
            .find(|(_, &(x, _))| x == t)
            .map(|(d, _)| *d)
            .unwrap()
    };
    assert_eq!(at(0.0).desired, 10);
    // The last recommendation of 10 was at t = 20; it leaves the window at t = 80.
    for t in [30.0, 40.0, 70.0] {
        assert_eq!(
            (at(t).desired, at(t).reason),
            (10, Reason::Stabilising),
            "t={t}"
        );
    }
    // At t = 80 the window's highest is 2 (t = 30, backlog 4), until t = 90.
    assert_eq!((at(80.0).desired, at(80.0).action), (2, Action::ScaleIn));
    // Then 0 is recommended, but the last work was at t = 30: one task stays until t = 150.
    assert_eq!((at(90.0).desired, at(90.0).reason), (1, Reason::Stabilised));
    assert_eq!(
        (at(140.0).desired, at(140.0).reason),
        (1, Reason::NotIdleYet)
    );
    assert_eq!((at(150.0).desired, at(150.0).reason), (0, Reason::Idle));
    assert_eq!(at(200.0).desired, 0);
    assert_eq!(
        ds.iter().filter(|d| d.action == Action::ScaleIn).count(),
        3,
        "10 -> 2 -> 1 -> 0, nothing else"
    );
}

#[test]
fn in_flight_work_keeps_its_workers() {
    // The known failure: counting only visible messages scales in under running jobs.
    let c = config();
    let mut s = PolicyState::default();
    let busy = Backlog {
        visible: 0,
        in_flight: 6,
    };
    let ds = replay(
        &c,
        &mut s,
        3,
        &ticks(
            0.0,
            30.0,
            &[
                busy.total(),
                busy.total(),
                busy.total(),
                busy.total(),
                busy.total(),
            ],
        ),
    );
    assert_eq!(counts(&ds), vec![3; 5], "6 in flight keep 3 tasks");
}

#[test]
fn one_message_wakes_a_pool_at_zero() {
    let c = config();
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 10.0, &[0, 0, 1]));
    assert_eq!(counts(&ds), vec![0, 0, 1]);
    assert_eq!(ds[2].action, Action::ScaleOut);
}

#[test]
fn activation_threshold_holds_zero_until_reached() {
    let c = PolicyConfig {
        activation: 5,
        ..config()
    };
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 10.0, &[3, 4, 5, 3]));
    assert_eq!(counts(&ds), vec![0, 0, 3, 3]);
    assert_eq!(ds[0].reason, Reason::BelowActivation);
    // Once awake, any work keeps the tasks (the threshold only gates waking up).
    assert_eq!(ds[3].action, Action::Hold);
}

#[test]
fn cooldown_delays_a_second_scale_in() {
    let c = PolicyConfig {
        stabilisation_secs: 0.0,
        cooldown_secs: 45.0,
        idle_secs: 0.0,
        ..config()
    };
    let mut s = PolicyState::default();
    let ds = replay(
        &c,
        &mut s,
        0,
        &ticks(0.0, 15.0, &[20, 10, 10, 10, 4, 4, 4, 4]),
    );
    // 10 at t=0; down to 5 waits for the cooldown (t=45); down to 2 waits again (t=90).
    assert_eq!(counts(&ds), vec![10, 10, 10, 5, 5, 5, 2, 2]);
    assert_eq!(ds[1].reason, Reason::Cooldown);
}

#[test]
fn min_tasks_is_a_floor_and_max_a_ceiling() {
    let c = PolicyConfig {
        min_tasks: 2,
        max_tasks: 4,
        stabilisation_secs: 0.0,
        ..config()
    };
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 0, &ticks(0.0, 200.0, &[0, 100, 0, 0]));
    assert_eq!(counts(&ds), vec![2, 4, 2, 2]);
    assert_eq!(ds[0].reason, Reason::Bounds);
    // Someone set 7 by hand: back to the ceiling.
    let d = decide(&c, &mut s, 1000.0, 100, 7);
    assert_eq!(
        (d.desired, d.action, d.reason),
        (4, Action::ScaleIn, Reason::Bounds)
    );
}

#[test]
fn state_survives_a_json_round_trip_between_ticks() {
    // tick mode keeps the state in a file: the same series split by a save and a load
    // decides exactly the same.
    let c = config();
    let series: Vec<(f64, u64)> = ticks(
        0.0,
        10.0,
        &[5, 20, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut whole = PolicyState::default();
    let expected = replay(&c, &mut whole, 0, &series);

    let mut state = PolicyState::default();
    let mut current = 0;
    let mut got = Vec::new();
    for &(t, b) in &series {
        let text = serde_json::to_string(&state).unwrap();
        state = serde_json::from_str(&text).unwrap();
        let d = decide(&c, &mut state, t, b, current);
        current = d.desired;
        got.push(d);
    }
    assert_eq!(got, expected);
    assert!(state.window.len() <= 2, "the window stays small: {state:?}");
}

#[test]
fn invalid_configs_are_refused() {
    let ok = config();
    assert!(ok.validate().is_ok());
    for bad in [
        PolicyConfig {
            target_per_task: 0.0,
            ..ok.clone()
        },
        PolicyConfig {
            min_tasks: 11,
            ..ok.clone()
        },
        PolicyConfig {
            max_tasks: 0,
            min_tasks: 0,
            ..ok.clone()
        },
        PolicyConfig {
            max_step_out: Some(0),
            ..ok.clone()
        },
        PolicyConfig {
            stabilisation_secs: -1.0,
            ..ok.clone()
        },
        PolicyConfig {
            activation: 0,
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn a_fresh_state_does_not_drop_running_tasks_at_once() {
    // A restarted scaler (or a lost tick state file) finds 4 tasks and an empty queue: it
    // observes a full window and idle period before scaling in.
    let c = config(); // window 60 s, idle 120 s
    let mut s = PolicyState::default();
    let ds = replay(&c, &mut s, 4, &ticks(0.0, 30.0, &[0, 0, 0, 0, 0, 0]));
    assert_eq!(counts(&ds), vec![4, 4, 1, 1, 0, 0]);
    assert_eq!(ds[0].reason, Reason::Stabilising);
    assert_eq!(ds[4].reason, Reason::Idle);
}
