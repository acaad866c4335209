//! The canonical grid of a `patch3d` model: the reference series' grid with its axes permuted and
//! flipped to the manifest's orientation, resampled to the target spacing — what MONAI's
//! `Orientationd(axcodes)` + `Spacingd(pixdim)` make of the reference series as NIfTI.
//!
//! 1. Axes: the reference grid's voxel axes, in NIfTI order (column i along the row direction, row
//!    j, slice k), are each given the world axis (RAS) their direction is closest to, greedily in
//!    that order (nibabel's `io_orientation` for a grid without shear). Canonical axis m is the voxel
//!    axis given world axis `orientation[m]`, flipped when it points the other way.
//! 2. Spacing: along canonical axis m, from a voxel axis of n voxels of s mm, the target t mm gives
//!    N = round_half_even((n - 1) s / t + 1) voxels; canonical voxel a lies at continuous source
//!    index q = a t / s from the (flipped) axis' first voxel: source index q, or n - 1 - q when
//!    flipped (MONAI `compute_shape_offset`: the grid keeps the corner voxel 0 and the directions).
//! 3. Values: trilinear interpolation with source indices clamped to [0, n - 1] (Spacingd's
//!    `padding_mode="border"`).
//! 4. Back (`to_reference`): a reference voxel's canonical index per axis is the inverse of 2; inside
//!    the (cropped) canonical box when -0.5 <= index <= N - 0.5, clamped to [0, N - 1] and
//!    interpolated trilinearly; outside the box it is background.

use ndarray::{Array3, ArrayView3, ArrayView4};

use crate::volume::Grid;

/// The most voxels a canonical grid may have (per channel; 2^27 = 512 MiB of f32): a study whose
/// field of view at the target spacing is larger fails before anything is allocated.
pub const MAX_CANONICAL_VOXELS: usize = 1 << 27;

/// One canonical axis: which reference array axis (0 = slice k, 1 = row j, 2 = column i) it runs
/// along, flipped or not, and its sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub source_axis: usize,
    pub flip: bool,
    pub source_len: usize,
    pub source_spacing: f64,
    pub len: usize,
    pub spacing: f64,
}

impl Axis {
    /// Continuous source index (in the reference array's own direction) of canonical index `a`.
    pub fn source_index(&self, a: f64) -> f64 {
        let q = a * self.spacing / self.source_spacing;
        if self.flip {
            (self.source_len - 1) as f64 - q
        } else {
            q
        }
    }

    /// Canonical continuous index of source index `x`.
    pub fn canonical_index(&self, x: f64) -> f64 {
        let q = if self.flip {
            (self.source_len - 1) as f64 - x
        } else {
            x
        };
        q * self.source_spacing / self.spacing
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    pub axes: [Axis; 3],
}

/// Checks an orientation code: three letters, one of L/R, one of P/A, one of I/S.
pub fn parse_orientation(code: &str) -> Result<[(usize, f64); 3], String> {
    let letters: Vec<char> = code.chars().collect();
    let bad = || {
        format!(
            "orientation {code:?} must be three letters, one each of L/R, A/P, S/I (e.g. \"RAS\")"
        )
    };
    if letters.len() != 3 {
        return Err(bad());
    }
    let mut out = [(0usize, 1.0f64); 3];
    for (m, c) in letters.iter().enumerate() {
        // (world axis in RAS, sign): R = +x, A = +y, S = +z.
        out[m] = match c.to_ascii_uppercase() {
            'R' => (0, 1.0),
            'L' => (0, -1.0),
            'A' => (1, 1.0),
            'P' => (1, -1.0),
            'S' => (2, 1.0),
            'I' => (2, -1.0),
            _ => return Err(bad()),
        };
    }
    let mut w: Vec<usize> = out.iter().map(|o| o.0).collect();
    w.sort_unstable();
    if w != [0, 1, 2] {
        return Err(bad());
    }
    Ok(out)
}

/// LPS (DICOM patient) direction -> RAS.
fn ras(v: [f64; 3]) -> [f64; 3] {
    [-v[0], -v[1], v[2]]
}

impl Canonical {
    /// The canonical grid of `grid` for `orientation` and `spacing` (validated manifest values);
    /// an error when it would exceed [`MAX_CANONICAL_VOXELS`].
    pub fn new(grid: &Grid, orientation: &str, spacing: [f64; 3]) -> Result<Self, String> {
        let target = parse_orientation(orientation)?;
        // Reference array axes: 0 = k (normal), 1 = j (col_dir), 2 = i (row_dir).
        let dirs = [ras(grid.normal), ras(grid.col_dir), ras(grid.row_dir)];
        let lens = [grid.slices, grid.rows, grid.cols];
        let spacings = [grid.slice_step, grid.spacing[0], grid.spacing[1]];
        // Greedy assignment in NIfTI voxel order (i, j, k).
        let mut world_of = [usize::MAX; 3];
        let mut used = [false; 3];
        for v in [2usize, 1, 0] {
            // The first world axis with the largest |component| (numpy argmax).
            let mut w = usize::MAX;
            for cand in (0..3).filter(|c| !used[*c]) {
                if w == usize::MAX || dirs[v][cand].abs() > dirs[v][w].abs() {
                    w = cand;
                }
            }
            used[w] = true;
            world_of[v] = w;
        }
        let mut axes = [Axis {
            source_axis: 0,
            flip: false,
            source_len: 1,
            source_spacing: 1.0,
            len: 1,
            spacing: 1.0,
        }; 3];
        let mut total: usize = 1;
        for (m, &(w, sign)) in target.iter().enumerate() {
            let v = (0..3)
                .find(|v| world_of[*v] == w)
                .expect("every world axis assigned");
            let (n, s, t) = (lens[v], spacings[v], spacing[m]);
            if n == 0 || !(s.is_finite() && s > 0.0) {
                return Err(format!("reference axis {v} has {n} voxels of {s} mm"));
            }
            let len = ((n - 1) as f64 * s / t + 1.0).round_ties_even();
            if !(len.is_finite() && (1.0..=MAX_CANONICAL_VOXELS as f64).contains(&len)) {
                return Err(format!(
                    "canonical axis {m} would have {len} voxels ({n} x {s} mm at {t} mm)"
                ));
            }
            let len = len as usize;
            total = total.saturating_mul(len);
            axes[m] = Axis {
                source_axis: v,
                flip: dirs[v][w] * sign < 0.0,
                source_len: n,
                source_spacing: s,
                len,
                spacing: t,
            };
        }
        if total > MAX_CANONICAL_VOXELS {
            return Err(format!(
                "the canonical grid would have {total} voxels ({} x {} x {}), more than the limit \
                 {MAX_CANONICAL_VOXELS}: the field of view is too large for the target spacing",
                axes[0].len, axes[1].len, axes[2].len
            ));
        }
        Ok(Canonical { axes })
    }

    pub fn shape(&self) -> [usize; 3] {
        [self.axes[0].len, self.axes[1].len, self.axes[2].len]
    }

    /// `vol[k, j, i]` on the reference grid -> `[a, b, c]` on the canonical grid.
    pub fn resample(&self, vol: ArrayView3<f32>) -> Array3<f32> {
        // Per canonical axis and index: (lower source index, upper, fraction), border-clamped.
        let tables: Vec<Vec<(usize, usize, f32)>> = self
            .axes
            .iter()
            .map(|ax| {
                (0..ax.len)
                    .map(|a| {
                        let n = ax.source_len;
                        let x = ax.source_index(a as f64).clamp(0.0, (n - 1) as f64);
                        let x0 = (x.floor() as usize).min(n - 1);
                        let x1 = (x0 + 1).min(n - 1);
                        (x0, x1, (x - x0 as f64) as f32)
                    })
                    .collect()
            })
            .collect();
        let src = vol.as_standard_layout();
        let dims = src.dim();
        let strides = [dims.1 * dims.2, dims.2, 1];
        let src = src.as_slice().expect("standard layout");
        let st = [
            strides[self.axes[0].source_axis],
            strides[self.axes[1].source_axis],
            strides[self.axes[2].source_axis],
        ];
        Array3::from_shape_fn(self.shape(), |(a, b, c)| {
            trilinear(
                |x, y, z| src[x * st[0] + y * st[1] + z * st[2]],
                tables[0][a],
                tables[1][b],
                tables[2][c],
            )
        })
    }

    /// Decides a label for every reference voxel from `values[channel, a, b, c]` (a canonical
    /// sub-box starting at canonical index `offset`): each channel is interpolated trilinearly at the
    /// voxel's canonical position and `decide` gets the interpolated channel values; voxels outside
    /// the box are 0. `dims` = the reference array's (slices, rows, cols).
    pub fn to_reference(
        &self,
        values: ArrayView4<f32>,
        offset: [usize; 3],
        dims: (usize, usize, usize),
        mut decide: impl FnMut(&[f32]) -> u8,
    ) -> Array3<u8> {
        let (k, box_a, box_b, box_c) = values.dim();
        let boxed = [box_a, box_b, box_c];
        let ref_lens = [dims.0, dims.1, dims.2];
        // Per canonical axis, indexed by the source index along its source axis.
        let tables: Vec<Vec<Option<(usize, usize, f32)>>> = (0..3)
            .map(|m| {
                let ax = &self.axes[m];
                (0..ref_lens[ax.source_axis])
                    .map(|x| {
                        let a = ax.canonical_index(x as f64) - offset[m] as f64;
                        let n = boxed[m];
                        if !(-0.5..=n as f64 - 0.5).contains(&a) {
                            return None;
                        }
                        let a = a.clamp(0.0, (n - 1) as f64);
                        let a0 = (a.floor() as usize).min(n - 1);
                        Some((a0, (a0 + 1).min(n - 1), (a - a0 as f64) as f32))
                    })
                    .collect()
            })
            .collect();
        let vals = values.as_standard_layout();
        let vals = vals.as_slice().expect("standard layout");
        let plane = box_a * box_b * box_c;
        let mut probs = vec![0f32; k];
        Array3::from_shape_fn(dims, |(kk, j, i)| {
            let src = [kk, j, i];
            let pick = |m: usize| tables[m][src[self.axes[m].source_axis]];
            let (Some(ta), Some(tb), Some(tc)) = (pick(0), pick(1), pick(2)) else {
                return 0;
            };
            for (ch, p) in probs.iter_mut().enumerate() {
                let base = ch * plane;
                *p = trilinear(
                    |a, b, c| vals[base + (a * box_b + b) * box_c + c],
                    ta,
                    tb,
                    tc,
                );
            }
            decide(&probs)
        })
    }
}

/// Trilinear interpolation: `at(x, y, z)` reads a voxel; each axis is (lower index, upper index,
/// fraction), the last axis interpolated first.
fn trilinear(
    at: impl Fn(usize, usize, usize) -> f32,
    (a0, a1, fa): (usize, usize, f32),
    (b0, b1, fb): (usize, usize, f32),
    (c0, c1, fc): (usize, usize, f32),
) -> f32 {
    let lerp = |a: f32, b: f32, f: f32| (1.0 - f) * a + f * b;
    let y0 = lerp(
        lerp(at(a0, b0, c0), at(a0, b0, c1), fc),
        lerp(at(a0, b1, c0), at(a0, b1, c1), fc),
        fb,
    );
    let y1 = lerp(
        lerp(at(a1, b0, c0), at(a1, b0, c1), fc),
        lerp(at(a1, b1, c0), at(a1, b1, c1), fc),
        fb,
    );
    lerp(y0, y1, fa)
}

/// Bounding box [lo, hi) of the voxels non-zero in any of `channels` (the whole grid when none is).
pub fn nonzero_box(channels: &[Array3<f32>]) -> ([usize; 3], [usize; 3]) {
    let shape = channels[0].dim();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for x in channels {
        for ((a, b, c), &v) in x.indexed_iter() {
            if v != 0.0 {
                for (d, i) in [a, b, c].into_iter().enumerate() {
                    lo[d] = lo[d].min(i);
                    hi[d] = hi[d].max(i + 1);
                }
            }
        }
    }
    if lo[0] == usize::MAX {
        return ([0; 3], [shape.0, shape.1, shape.2]);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial_lps(slices: usize, rows: usize, cols: usize) -> Grid {
        // DICOM axial: rows along +y (posterior), columns along +x (left), slices ascending in z.
        Grid {
            slices,
            rows,
            cols,
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing: [0.8, 0.9],
            slice_step: 2.0,
            origin: [-10.0, -20.0, 5.0],
        }
    }

    #[test]
    fn ras_of_an_axial_lps_grid_flips_columns_and_rows() {
        let g = axial_lps(5, 6, 7);
        let c = Canonical::new(&g, "RAS", [0.9, 0.8, 2.0]).unwrap();
        // R <- column axis (row_dir +x LPS = left): flipped; A <- rows (+y LPS = posterior): flipped;
        // S <- slices, not flipped. Same spacing: same counts.
        assert_eq!(
            c.axes.map(|a| (a.source_axis, a.flip, a.len)),
            [(2, true, 7), (1, true, 6), (0, false, 5)]
        );
        let vol = Array3::from_shape_fn((5, 6, 7), |(k, j, i)| (100 * k + 10 * j + i) as f32);
        let out = c.resample(vol.view());
        for ((a, b, s), v) in out.indexed_iter() {
            assert_eq!(*v, vol[[s, 5 - b, 6 - a]], "({a},{b},{s})");
        }
        // Back again: every reference voxel at its own value (argmax of a one-hot of the value).
        let one = out.mapv(|v| v).insert_axis(ndarray::Axis(0));
        let back = c.to_reference(one.view(), [0; 3], (5, 6, 7), |p| (p[0] as u32 % 251) as u8);
        for ((k, j, i), v) in back.indexed_iter() {
            assert_eq!(*v as u32, (100 * k + 10 * j + i) as u32 % 251);
        }
        let lps = Canonical::new(&g, "LPS", [0.9, 0.8, 2.0]).unwrap();
        assert!(lps.axes.iter().all(|a| !a.flip));
        assert!(Canonical::new(&g, "RAR", [1.0; 3]).is_err());
    }

    #[test]
    fn spacing_keeps_the_corner_and_rounds_the_count() {
        let g = axial_lps(5, 6, 7);
        // Slices: (5 - 1) x 2.0 / 1.5 + 1 = 6.33 -> 6; a linear ramp stays linear.
        let c = Canonical::new(&g, "LPS", [0.9, 0.8, 1.5]).unwrap();
        assert_eq!(c.shape(), [7, 6, 6]);
        let vol = Array3::from_shape_fn((5, 6, 7), |(k, _, _)| k as f32 * 2.0);
        let out = c.resample(vol.view());
        for ((_, _, s), v) in out.indexed_iter() {
            let want = (s as f32 * 1.5).min(8.0); // border clamp beyond the last slice
            assert!((v - want).abs() < 1e-5, "{s}: {v} vs {want}");
        }
        assert!(Canonical::new(&g, "LPS", [1e-4, 1e-4, 1e-4]).is_err());
    }

    #[test]
    fn a_cropped_box_maps_back_inside_and_is_background_outside() {
        let g = axial_lps(6, 8, 10);
        let c = Canonical::new(&g, "LPS", [0.9, 0.8, 2.0]).unwrap();
        assert_eq!(c.shape(), [10, 8, 6]);
        // A box of canonical voxels [2..6) x [3..5) x [1..4), value = 1 + its first index.
        let vals = ndarray::Array4::from_shape_fn((1, 4, 2, 3), |(_, a, _, _)| 1.0 + a as f32);
        let back = c.to_reference(vals.view(), [2, 3, 1], (6, 8, 10), |p| p[0] as u8);
        for ((k, j, i), v) in back.indexed_iter() {
            // LPS: canonical (a, b, s) = reference (i, j, k); inside the box within half a voxel.
            let inside = (2..6).contains(&i) && (3..5).contains(&j) && (1..4).contains(&k);
            let want = if inside { (1 + i - 2) as u8 } else { 0 };
            assert_eq!(*v, want, "({k},{j},{i})");
        }
    }

    #[test]
    fn nonzero_box_is_the_union_over_channels() {
        let mut a = Array3::<f32>::zeros((4, 5, 6));
        let mut b = a.clone();
        a[[1, 2, 3]] = 1.0;
        b[[2, 4, 1]] = -1.0;
        assert_eq!(nonzero_box(&[a, b]), ([1, 2, 1], [3, 5, 4]));
        assert_eq!(
            nonzero_box(&[Array3::<f32>::zeros((2, 3, 4))]),
            ([0; 3], [2, 3, 4])
        );
    }
}
