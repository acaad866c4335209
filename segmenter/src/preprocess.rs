//! Resampling and normalisation exactly as model.toml ([geometry], [normalisation], [output]) and its
//! numpy reference, models/preprocess.py, describe them. Arithmetic is done in the same order and
//! precision (indices in f64, interpolation in f32) so the Rust and Python pipelines agree.

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis, Zip};

use crate::volume::Grid;

/// Bilinear sample of `img` (rows x cols, row-major) at continuous (j, i); `None` outside
/// 0 <= j <= rows-1, 0 <= i <= cols-1.
#[inline]
fn bilinear(img: &[f32], rows: usize, cols: usize, j: f64, i: f64) -> Option<f32> {
    if !(j >= 0.0 && j <= (rows - 1) as f64 && i >= 0.0 && i <= (cols - 1) as f64) {
        return None;
    }
    let j0 = (j.floor() as usize).min(rows.saturating_sub(2));
    let i0 = (i.floor() as usize).min(cols.saturating_sub(2));
    let fj = (j - j0 as f64) as f32;
    let fi = (i - i0 as f64) as f32;
    let j1 = (j0 + 1).min(rows - 1);
    let i1 = (i0 + 1).min(cols - 1);
    let a = img[j0 * cols + i0];
    let b = img[j0 * cols + i1];
    let c = img[j1 * cols + i0];
    let d = img[j1 * cols + i1];
    Some((1.0 - fj) * ((1.0 - fi) * a + fi * b) + fj * ((1.0 - fi) * c + fi * d))
}

/// Resamples `data` (on `from`) onto the grid `to` by trilinear interpolation in patient
/// coordinates; `outside` where `to` leaves `from`'s field of view. Identity (a copy) when the
/// grids agree within 0.01 mm.
pub fn resample_trilinear(
    data: ArrayView3<f32>,
    from: &Grid,
    to: &Grid,
    outside: f32,
) -> Array3<f32> {
    if from.same_as(to, 0.01) {
        return data.to_owned();
    }
    let (ks, js, is) = (from.slices, from.rows, from.cols);
    let eps = 1e-6;
    let base = from.index_of(to.point(0.0, 0.0, 0.0));
    let step = |p: [f64; 3]| {
        let q = from.index_of(p);
        [q[0] - base[0], q[1] - base[1], q[2] - base[2]]
    };
    let dk = step(to.point(1.0, 0.0, 0.0));
    let dj = step(to.point(0.0, 1.0, 0.0));
    let di = step(to.point(0.0, 0.0, 1.0));
    let src = data.as_standard_layout();
    let src = src.as_slice().expect("standard layout");
    let plane = js * is;
    let mut out = Array3::<f32>::from_elem((to.slices, to.rows, to.cols), outside);
    let axis_sample = |x: f64, n: usize| -> Option<(usize, f32)> {
        if n == 1 {
            return (x.abs() <= eps).then_some((0, 0.0));
        }
        if !(x >= -eps && x <= (n - 1) as f64 + eps) {
            return None;
        }
        let x = x.clamp(0.0, (n - 1) as f64);
        let x0 = (x.floor() as usize).min(n - 2);
        Some((x0, (x - x0 as f64) as f32))
    };
    for ((k, j, i), v) in out.indexed_iter_mut() {
        let (kf, jf, if_) = (k as f64, j as f64, i as f64);
        let q = [
            base[0] + kf * dk[0] + jf * dj[0] + if_ * di[0],
            base[1] + kf * dk[1] + jf * dj[1] + if_ * di[1],
            base[2] + kf * dk[2] + jf * dj[2] + if_ * di[2],
        ];
        let (Some((k0, fk)), Some((j0, fj)), Some((i0, fi))) = (
            axis_sample(q[0], ks),
            axis_sample(q[1], js),
            axis_sample(q[2], is),
        ) else {
            continue;
        };
        let k1 = (k0 + 1).min(ks - 1);
        let j1 = (j0 + 1).min(js - 1);
        let i1 = (i0 + 1).min(is - 1);
        let at = |k: usize, j: usize, i: usize| src[k * plane + j * is + i];
        let lerp = |a: f32, b: f32, f: f32| (1.0 - f) * a + f * b;
        let c00 = lerp(at(k0, j0, i0), at(k0, j0, i1), fi);
        let c01 = lerp(at(k0, j1, i0), at(k0, j1, i1), fi);
        let c10 = lerp(at(k1, j0, i0), at(k1, j0, i1), fi);
        let c11 = lerp(at(k1, j1, i0), at(k1, j1, i1), fi);
        *v = lerp(lerp(c00, c01, fj), lerp(c10, c11, fj), fk);
    }
    out
}

/// The in-plane model grid: `size` = [rows, cols] pixels of `spacing` = [row, col] mm, centred on
/// each reference slice, axes along the slice's row/column directions.
#[derive(Debug, Clone, Copy)]
pub struct ModelGrid {
    pub size: [usize; 2],
    pub spacing: [f64; 2],
}

impl ModelGrid {
    /// Reference continuous (j, i) of model pixel (v, u).
    fn reference_index(&self, grid: &Grid, v: usize, u: usize) -> (f64, f64) {
        let i = (grid.cols as f64 - 1.0) / 2.0
            + (u as f64 - (self.size[1] as f64 - 1.0) / 2.0) * self.spacing[1] / grid.spacing[1];
        let j = (grid.rows as f64 - 1.0) / 2.0
            + (v as f64 - (self.size[0] as f64 - 1.0) / 2.0) * self.spacing[0] / grid.spacing[0];
        (j, i)
    }

    /// Model continuous (v, u) of reference pixel (j, i).
    fn model_index(&self, grid: &Grid, j: usize, i: usize) -> (f64, f64) {
        let u = (self.size[1] as f64 - 1.0) / 2.0
            + (i as f64 - (grid.cols as f64 - 1.0) / 2.0) * grid.spacing[1] / self.spacing[1];
        let v = (self.size[0] as f64 - 1.0) / 2.0
            + (j as f64 - (grid.rows as f64 - 1.0) / 2.0) * grid.spacing[0] / self.spacing[0];
        (v, u)
    }

    /// `vol[k, j, i]` on the reference grid -> `[k, v, u]` on the model grid (bilinear, `outside`
    /// beyond the image).
    pub fn from_reference(&self, vol: ArrayView3<f32>, grid: &Grid, outside: f32) -> Array3<f32> {
        let [h, w] = self.size;
        let idx: Vec<(f64, f64)> = (0..h)
            .flat_map(|v| (0..w).map(move |u| (v, u)))
            .map(|(v, u)| self.reference_index(grid, v, u))
            .collect();
        let mut out = Array3::<f32>::zeros((vol.shape()[0], h, w));
        Zip::from(out.outer_iter_mut())
            .and(vol.outer_iter())
            .for_each(|mut dst, src| {
                let src = src.as_standard_layout();
                let src = src.as_slice().expect("standard layout");
                for (d, &(j, i)) in dst.iter_mut().zip(&idx) {
                    *d = bilinear(src, grid.rows, grid.cols, j, i).unwrap_or(outside);
                }
            });
        out
    }

    /// `logits[k, class, v, u]` on the model grid -> labels `[k, j, i]` on the reference grid:
    /// every class's logits sampled bilinearly, the label is `classes[argmax]` (first maximum wins),
    /// 0 outside the model grid.
    pub fn labels_on_reference(
        &self,
        logits: ArrayView4<f32>,
        grid: &Grid,
        classes: &[u8],
    ) -> Array3<u8> {
        let [h, w] = self.size;
        let idx: Vec<(f64, f64)> = (0..grid.rows)
            .flat_map(|j| (0..grid.cols).map(move |i| (j, i)))
            .map(|(j, i)| self.model_index(grid, j, i))
            .collect();
        let mut out = Array3::<u8>::zeros((logits.shape()[0], grid.rows, grid.cols));
        Zip::from(out.outer_iter_mut())
            .and(logits.outer_iter())
            .for_each(|mut dst, lg| {
                let lg = lg.as_standard_layout();
                let planes: Vec<&[f32]> = lg
                    .axis_iter(Axis(0))
                    .map(|p| p.to_slice().expect("standard layout"))
                    .collect();
                for (d, &(v, u)) in dst.iter_mut().zip(&idx) {
                    let mut best: Option<(usize, f32)> = None;
                    for (c, p) in planes.iter().enumerate() {
                        let Some(x) = bilinear(p, h, w, v, u) else {
                            best = None;
                            break;
                        };
                        if best.is_none_or(|(_, b)| x > b) {
                            best = Some((c, x));
                        }
                    }
                    *d = best.map_or(0, |(c, _)| classes[c]);
                }
            });
        out
    }
}

/// z-score over the voxels above the volume's mean (`zscore_above_mean`, scope `volume`); statistics
/// in f64, result in f32.
pub fn normalise_zscore_above_mean(x: &mut Array3<f32>, std_floor: f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut count, mut sum) = (0usize, 0f64);
    for &v in x.iter() {
        if (v as f64) > mean {
            count += 1;
            sum += v as f64;
        }
    }
    let (mu, sd) = if count == 0 {
        (0.0, 1.0)
    } else {
        let mu = sum / count as f64;
        let var = x
            .iter()
            .map(|&v| v as f64)
            .filter(|&v| v > mean)
            .map(|v| (v - mu) * (v - mu))
            .sum::<f64>()
            / count as f64;
        (mu, var.sqrt())
    };
    let scale = sd.max(std_floor);
    x.mapv_inplace(|v| ((v as f64 - mu) / scale) as f32);
}

/// Stacks channel volumes `[k, v, u]` into the network layout `[k, channel, v, u]`.
pub fn stack_channels(channels: &[Array3<f32>]) -> Array4<f32> {
    let views: Vec<_> = channels.iter().map(|c| c.view()).collect();
    ndarray::stack(Axis(1), &views).expect("channels share the model grid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize, slices: usize, spacing: f64) -> Grid {
        Grid {
            slices,
            rows,
            cols,
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing: [spacing, spacing],
            slice_step: 3.0,
            origin: [-10.0, -20.0, 5.0],
        }
    }

    #[test]
    fn trilinear_is_exact_on_linear_fields_and_identity_on_same_grid() {
        let g = grid(6, 7, 5, 2.0);
        let f = |p: [f64; 3]| (0.5 * p[0] - 0.25 * p[1] + 0.1 * p[2]) as f32;
        let data = Array3::from_shape_fn((5, 6, 7), |(k, j, i)| {
            f(g.point(k as f64, j as f64, i as f64))
        });
        let same = resample_trilinear(data.view(), &g, &g, -1.0);
        assert_eq!(same, data);
        // A finer grid shifted by half a voxel, inside the source box.
        let mut fine = grid(8, 9, 7, 1.0);
        fine.slice_step = 1.5;
        fine.origin = [-9.5, -19.0, 6.0];
        let out = resample_trilinear(data.view(), &g, &fine, -1.0);
        for ((k, j, i), v) in out.indexed_iter() {
            let want = f(fine.point(k as f64, j as f64, i as f64));
            assert!((v - want).abs() < 1e-4, "({k},{j},{i}) {v} vs {want}");
        }
        // Outside the field of view -> the outside value.
        let mut far = fine.clone();
        far.origin = [500.0, 0.0, 0.0];
        assert!(resample_trilinear(data.view(), &g, &far, -1.0)
            .iter()
            .all(|&v| v == -1.0));
    }

    #[test]
    fn model_grid_round_trip_keeps_labels_in_place() {
        // A 20x30 reference slice at 1.5 mm onto a 16x16 model grid of 2 mm and back.
        let g = grid(20, 30, 1, 1.5);
        let mg = ModelGrid {
            size: [16, 16],
            spacing: [2.0, 2.0],
        };
        // Model-grid logits: class 1 wins in the left half of the model grid.
        let mut logits = ndarray::Array4::<f32>::zeros((1, 2, 16, 16));
        for v in 0..16 {
            for u in 0..16 {
                logits[[0, 1, v, u]] = if u < 8 { 1.0 } else { -1.0 };
            }
        }
        let labels = mg.labels_on_reference(logits.view(), &g, &[0, 5]);
        // Reference column i maps to u = 7.5 + (i - 14.5) * 0.75: u < 7.5 <=> i < 14.5.
        for j in 0..20 {
            for i in 0..30 {
                let u = 7.5 + (i as f64 - 14.5) * 0.75;
                let v = 7.5 + (j as f64 - 9.5) * 0.75;
                let inside = (0.0..=15.0).contains(&u) && (0.0..=15.0).contains(&v);
                let want = if !inside {
                    0
                } else if u < 7.5 {
                    5
                } else {
                    0
                };
                assert_eq!(labels[[0, j, i]], want, "({j},{i})");
            }
        }
    }

    #[test]
    fn zscore_uses_voxels_above_the_mean() {
        let mut x =
            Array3::from_shape_vec((1, 1, 6), vec![0.0, 0.0, 0.0, 10.0, 20.0, 30.0]).unwrap();
        normalise_zscore_above_mean(&mut x, 1e-6);
        // mean 10 -> F = {20, 30}: mu 25, sd 5.
        let got: Vec<f32> = x.iter().copied().collect();
        assert_eq!(got, vec![-5.0, -5.0, -5.0, -3.0, -1.0, 1.0]);
    }
}
