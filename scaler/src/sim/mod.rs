//! The simulator: replay an arrival trace against the policy, and against a fixed pool of
//! the same cost, to see queue waits and task-hours before touching a real queue.

pub mod engine;
pub mod plot;
pub mod report;
pub mod rng;
pub mod trace;

pub use engine::{service_times, simulate, Run, Sample, SimConfig, Sizing};
pub use plot::{plot, PlotError};
pub use report::{percentile, summarise, table, Summary};
pub use rng::{LogNormal, Rng};
pub use trace::{Arrival, Builtin, Trace, TraceError};

use crate::policy::PolicyConfig;

/// The policy's run, then fixed pools at the whole numbers around its mean task count:
/// `ceil` costs at least as much as the policy (the fair comparison for "lower wait at equal
/// or lower cost"), `floor` a little less.
pub fn compare(trace: &Trace, config: &SimConfig, policy: &PolicyConfig) -> Vec<Run> {
    let service = service_times(trace, config);
    let p = simulate(
        trace,
        &service,
        config,
        &Sizing::Policy(policy.clone()),
        "policy",
    );
    let mean = p.mean_tasks();
    let mut sizes = vec![(mean.ceil() as u32).max(1)];
    let floor = mean.floor() as u32;
    if floor >= 1 && floor != sizes[0] {
        sizes.push(floor);
    }
    let mut runs = vec![p];
    for n in sizes {
        runs.push(simulate(
            trace,
            &service,
            config,
            &Sizing::Fixed(n),
            &format!("fixed {n}"),
        ));
    }
    runs
}
