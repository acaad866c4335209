//! Intensity normalisation methods of `[normalisation]` for `geometry.kind = "patch3d"` (the slice2d
//! path keeps `zscore_above_mean` in `preprocess.rs`). The exact formulas are in the manifest
//! comments of models/parity-patch3d/model.toml and in docs/BRING_YOUR_OWN_MODEL.md; statistics are
//! accumulated in f64, values stay f32.
//!
//! - `zscore_above_mean` (scope `volume`): the slice2d method, on the whole canonical volume.
//! - `zscore_nonzero`: M = the voxels where this channel is non-zero (scope `channel_nonzero`, MONAI
//!   `NormalizeIntensityd(nonzero=True, channel_wise=True)`) or where any channel is non-zero (scope
//!   `any_channel_nonzero`, nnU-Net's ZScoreNormalization with `use_mask_for_norm`);
//!   mu = mean(x[M]), sd = population std of x[M]; x'[M] = (x - mu) / max(sd, std_floor); x' = 0
//!   outside M. An empty M leaves the channel unchanged.
//! - `percentile_clip`: over the voxels of the scope (`volume`: all; `channel_nonzero`: this
//!   channel's non-zero ones) lo, hi = the `percentiles` by linear interpolation between order
//!   statistics (numpy's default: position p/100 x (n-1) in the sorted values);
//!   x' = (min(max(x, lo), hi) - lo) / max(hi - lo, std_floor) on the scope, 0 elsewhere
//!   (MONAI ScaleIntensityRangePercentiles(b_min=0, b_max=1, clip=True)).

use ndarray::{Array3, Zip};

use crate::manifest::Normalisation;
use crate::preprocess::normalise_zscore_above_mean;

/// Normalises every channel (all on one grid) in place as `n` says. The manifest was validated, so
/// the method and scope are known ones.
pub fn normalise(channels: &mut [Array3<f32>], n: &Normalisation) {
    match n.method.as_str() {
        "zscore_above_mean" => {
            for x in channels.iter_mut() {
                normalise_zscore_above_mean(x, n.std_floor);
            }
        }
        "zscore_nonzero" => {
            let any = (n.scope == "any_channel_nonzero").then(|| any_nonzero(channels));
            for x in channels.iter_mut() {
                let mask = any.clone().unwrap_or_else(|| x.mapv(|v| v != 0.0));
                zscore_masked(x, &mask, n.std_floor);
            }
        }
        "percentile_clip" => {
            let [plo, phi] = n.percentiles.unwrap_or([0.0, 100.0]);
            for x in channels.iter_mut() {
                let mask = if n.scope == "channel_nonzero" {
                    x.mapv(|v| v != 0.0)
                } else {
                    x.mapv(|_| true)
                };
                percentile_clip(x, &mask, plo, phi, n.std_floor);
            }
        }
        other => unreachable!("normalisation.method {other:?} passed validation"),
    }
}

/// Voxels that are non-zero in any channel.
pub fn any_nonzero(channels: &[Array3<f32>]) -> Array3<bool> {
    let mut m = Array3::from_elem(channels[0].raw_dim(), false);
    for x in channels {
        Zip::from(&mut m).and(x).for_each(|m, &v| *m |= v != 0.0);
    }
    m
}

/// z-score over the voxels of `mask`; 0 outside it; unchanged when the mask is empty.
pub fn zscore_masked(x: &mut Array3<f32>, mask: &Array3<bool>, std_floor: f64) {
    let (mut count, mut sum) = (0usize, 0f64);
    Zip::from(&*x).and(mask).for_each(|&v, &m| {
        if m {
            count += 1;
            sum += v as f64;
        }
    });
    if count == 0 {
        return;
    }
    let mu = sum / count as f64;
    let mut ss = 0f64;
    Zip::from(&*x).and(mask).for_each(|&v, &m| {
        if m {
            ss += (v as f64 - mu) * (v as f64 - mu);
        }
    });
    let sd = (ss / count as f64).sqrt().max(std_floor);
    Zip::from(x).and(mask).for_each(|v, &m| {
        *v = if m {
            ((*v as f64 - mu) / sd) as f32
        } else {
            0.0
        };
    });
}

/// numpy's default (linear) percentile of sorted values.
pub fn percentile(sorted: &[f32], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let pos = p / 100.0 * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let f = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * f
}

fn percentile_clip(x: &mut Array3<f32>, mask: &Array3<bool>, plo: f64, phi: f64, floor: f64) {
    let mut v: Vec<f32> = x
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| **m)
        .map(|(&v, _)| v)
        .collect();
    if v.is_empty() {
        return;
    }
    v.sort_unstable_by(f32::total_cmp);
    let (lo, hi) = (percentile(&v, plo), percentile(&v, phi));
    drop(v);
    let range = (hi - lo).max(floor);
    Zip::from(x).and(mask).for_each(|v, &m| {
        *v = if m {
            (((*v as f64).clamp(lo, hi) - lo) / range) as f32
        } else {
            0.0
        };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(method: &str, scope: &str, percentiles: Option<[f64; 2]>) -> Normalisation {
        Normalisation {
            method: method.into(),
            scope: scope.into(),
            std_floor: 1e-8,
            percentiles,
        }
    }

    #[test]
    fn zscore_nonzero_uses_each_channels_own_nonzero_voxels() {
        let a = Array3::from_shape_vec((1, 1, 5), vec![0.0, 2.0, 4.0, 0.0, 6.0]).unwrap();
        let b = Array3::from_shape_vec((1, 1, 5), vec![1.0, 1.0, 3.0, 0.0, 0.0]).unwrap();
        let mut ch = vec![a.clone(), b.clone()];
        normalise(&mut ch, &norm("zscore_nonzero", "channel_nonzero", None));
        // a: M = {2, 4, 6}: mu 4, sd sqrt(8/3); zeros stay 0.
        let sd = (8.0f64 / 3.0).sqrt();
        let want = [0.0, -2.0 / sd, 0.0, 0.0, 2.0 / sd];
        for (g, w) in ch[0].iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        // nnU-Net's mask: any channel non-zero = voxels 0, 1, 2, 4; b over {1, 1, 3, 0}.
        let mut ch = vec![a, b];
        normalise(
            &mut ch,
            &norm("zscore_nonzero", "any_channel_nonzero", None),
        );
        let mu = 1.25f64;
        let var = [1.0f64, 1.0, 3.0, 0.0]
            .iter()
            .map(|v| (v - mu) * (v - mu))
            .sum::<f64>()
            / 4.0;
        let want = [
            (1.0 - mu) / var.sqrt(),
            (1.0 - mu) / var.sqrt(),
            (3.0 - mu) / var.sqrt(),
            0.0,
            (0.0 - mu) / var.sqrt(),
        ];
        for (g, w) in ch[1].iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn percentile_clip_matches_numpys_linear_percentile() {
        // np.percentile([0..=10], [10, 85]) = [1.0, 8.5]
        let mut ch = vec![Array3::from_shape_fn((1, 1, 11), |(_, _, i)| i as f32)];
        normalise(
            &mut ch,
            &norm("percentile_clip", "volume", Some([10.0, 85.0])),
        );
        let got: Vec<f32> = ch[0].iter().copied().collect();
        let want: Vec<f32> = (0..11)
            .map(|i| (((i as f64).clamp(1.0, 8.5) - 1.0) / 7.5) as f32)
            .collect();
        assert_eq!(got, want);
    }
}
