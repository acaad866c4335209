//! Arrival traces: replayed from a CSV file, or generated (seeded) for the built-in shapes.

use std::str::FromStr;

use super::rng::Rng;

/// One study arriving: when (seconds from the start), and optionally how long it takes to
/// segment (otherwise drawn from the service-time distribution).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at: f64,
    pub service: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub name: String,
    /// Seconds the trace covers (at least up to its last arrival).
    pub duration: f64,
    /// Sorted by time.
    pub arrivals: Vec<Arrival>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("trace line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("the trace has no arrivals")]
    Empty,
    #[error("unknown built-in trace {0:?}: use steady, morning-peak or outage-flood")]
    UnknownBuiltin(String),
}

impl Trace {
    /// CSV: `arrival_seconds[,service_seconds]` per line; a header line, blank lines and
    /// `#` comments are skipped. Rows may come in any order.
    pub fn parse_csv(name: &str, text: &str) -> Result<Trace, TraceError> {
        let mut arrivals = Vec::new();
        let mut header_allowed = true;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| TraceError::Line {
                line: i + 1,
                message,
            };
            let mut fields = line.split(',').map(str::trim);
            let first = fields.next().unwrap_or("");
            let Ok(at) = first.parse::<f64>() else {
                if header_allowed {
                    header_allowed = false;
                    continue;
                }
                return Err(err(format!("{first:?} is not a time in seconds")));
            };
            header_allowed = false;
            if !(at.is_finite() && at >= 0.0) {
                return Err(err(format!("arrival time {at} must be >= 0")));
            }
            let service = match fields.next().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => {
                    let v: f64 = s
                        .parse()
                        .map_err(|_| err(format!("{s:?} is not a service time in seconds")))?;
                    if !(v.is_finite() && v > 0.0) {
                        return Err(err(format!("service time {v} must be > 0")));
                    }
                    Some(v)
                }
            };
            arrivals.push(Arrival { at, service });
        }
        if arrivals.is_empty() {
            return Err(TraceError::Empty);
        }
        arrivals.sort_by(|a, b| a.at.total_cmp(&b.at));
        let duration = arrivals.last().map_or(0.0, |a| a.at);
        Ok(Trace {
            name: name.to_string(),
            duration,
            arrivals,
        })
    }

    /// A generated trace (see [`Builtin`]).
    pub fn builtin(which: Builtin, seed: u64) -> Trace {
        let spec = which.spec();
        let mut rng = Rng::new(seed);
        let mut times = Vec::new();
        for &(from_h, to_h, per_hour) in spec.segments {
            if per_hour <= 0.0 {
                continue;
            }
            let (from, to) = (from_h * 3600.0, to_h * 3600.0);
            let mut t = from + rng.exponential(per_hour / 3600.0);
            while t < to {
                times.push(t);
                t += rng.exponential(per_hour / 3600.0);
            }
        }
        for &(at_h, count, spread) in spec.bursts {
            for _ in 0..count {
                times.push(at_h * 3600.0 + rng.uniform() * spread);
            }
        }
        times.sort_by(f64::total_cmp);
        Trace {
            name: which.name().to_string(),
            duration: spec.hours * 3600.0,
            arrivals: times
                .into_iter()
                .map(|at| Arrival { at, service: None })
                .collect(),
        }
    }
}

/// The generated traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// 8 hours of Poisson arrivals at 500 studies an hour.
    Steady,
    /// A day: quiet night, a morning peak with batch pushes from clinics, a tail.
    MorningPeak,
    /// 12 hours at 150 an hour; a 2-hour PACS outage, then its backlog arrives in 10 minutes.
    OutageFlood,
}

struct Spec {
    hours: f64,
    /// (from hour, to hour, studies per hour), Poisson.
    segments: &'static [(f64, f64, f64)],
    /// (at hour, studies, spread over seconds), uniform.
    bursts: &'static [(f64, usize, f64)],
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [Builtin::Steady, Builtin::MorningPeak, Builtin::OutageFlood];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Steady => "steady",
            Builtin::MorningPeak => "morning-peak",
            Builtin::OutageFlood => "outage-flood",
        }
    }

    fn spec(self) -> Spec {
        match self {
            Builtin::Steady => Spec {
                hours: 8.0,
                segments: &[(0.0, 8.0, 500.0)],
                bursts: &[],
            },
            Builtin::MorningPeak => Spec {
                hours: 24.0,
                segments: &[
                    (0.0, 6.0, 15.0),
                    (6.0, 7.0, 200.0),
                    (7.0, 10.0, 700.0),
                    (10.0, 13.0, 300.0),
                    (13.0, 17.0, 200.0),
                    (17.0, 24.0, 20.0),
                ],
                bursts: &[(7.5, 60, 120.0), (8.25, 60, 120.0), (9.0, 60, 120.0)],
            },
            Builtin::OutageFlood => Spec {
                hours: 12.0,
                segments: &[(0.0, 3.0, 150.0), (5.0, 12.0, 150.0)],
                bursts: &[(5.0, 300, 600.0)],
            },
        }
    }
}

impl FromStr for Builtin {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| TraceError::UnknownBuiltin(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_comments_and_service_times() {
        let t = Trace::parse_csv("t", "arrival_s,service_s\n# a comment\n10,5\n\n2.5\n").unwrap();
        assert_eq!(
            t.arrivals,
            vec![
                Arrival {
                    at: 2.5,
                    service: None
                },
                Arrival {
                    at: 10.0,
                    service: Some(5.0)
                }
            ]
        );
        assert_eq!(t.duration, 10.0);
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert_eq!(
            Trace::parse_csv("t", "1\nx\n"),
            Err(TraceError::Line {
                line: 2,
                message: "\"x\" is not a time in seconds".into()
            })
        );
        assert!(matches!(
            Trace::parse_csv("t", "1,-3\n"),
            Err(TraceError::Line { line: 1, .. })
        ));
        assert_eq!(Trace::parse_csv("t", "# nothing\n"), Err(TraceError::Empty));
    }

    #[test]
    fn builtins_are_seeded_and_shaped() {
        let a = Trace::builtin(Builtin::MorningPeak, 1);
        assert_eq!(a, Trace::builtin(Builtin::MorningPeak, 1));
        assert_ne!(a, Trace::builtin(Builtin::MorningPeak, 2));
        let per_hour = |t: &Trace, h: f64| {
            t.arrivals
                .iter()
                .filter(|x| x.at >= h * 3600.0 && x.at < (h + 1.0) * 3600.0)
                .count()
        };
        // Night is quiet, the morning is busy.
        assert!(per_hour(&a, 3.0) < 50, "{}", per_hour(&a, 3.0));
        assert!(per_hour(&a, 8.0) > 500, "{}", per_hour(&a, 8.0));
        let f = Trace::builtin(Builtin::OutageFlood, 1);
        assert_eq!(per_hour(&f, 3.5), 0, "nothing during the outage");
        assert!(per_hour(&f, 5.0) > 300, "the flood after it");
        assert_eq!("steady".parse::<Builtin>().unwrap(), Builtin::Steady);
        assert!("nope".parse::<Builtin>().is_err());
    }
}
