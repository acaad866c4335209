//! A small seeded generator (SplitMix64) and the distributions the simulator draws from.
//! Our own, so a seed gives the same trace on every platform and dependency version.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given rate (events per unit).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.uniform()).ln() / rate
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// z of the 90th percentile of the standard normal.
const Z90: f64 = 1.281_551_565_545;

/// A lognormal service time given by its median and 90th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    pub mu: f64,
    pub sigma: f64,
}

impl LogNormal {
    /// `p90 >= median > 0`.
    pub fn from_median_p90(median: f64, p90: f64) -> Option<Self> {
        (median > 0.0 && p90 >= median && p90.is_finite()).then(|| LogNormal {
            mu: median.ln(),
            sigma: (p90 / median).ln() / Z90,
        })
    }

    pub fn sample(&self, rng: &mut Rng) -> f64 {
        (self.mu + self.sigma * rng.normal()).exp()
    }

    pub fn mean(&self) -> f64 {
        (self.mu + self.sigma * self.sigma / 2.0).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lognormal_has_the_median_and_p90_it_was_given() {
        let d = LogNormal::from_median_p90(12.0, 25.0).unwrap();
        let mut rng = Rng::new(7);
        let mut v: Vec<f64> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let p90 = v[v.len() * 9 / 10];
        assert!((median - 12.0).abs() < 0.4, "median {median}");
        assert!((p90 - 25.0).abs() < 1.0, "p90 {p90}");
    }

    #[test]
    fn a_seed_gives_the_same_sequence() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(3);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(3);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(Rng::new(4).next_u64(), a[0]);
    }
}
