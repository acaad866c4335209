//! The brain-extraction stage (`[brain_extraction]` in a model manifest): a brain-mask model runs on
//! the reference grid before the tumour model; voxels outside the mask get the stage's
//! `outside_value` before normalisation, and no label is kept outside the mask. An implausible mask
//! (volume out of range, or a mask whose surface lies mostly on the volume's boundary: the "brain"
//! fills the field of view) fails the job permanently with the reason.
//!
//! The numpy reference is `brain_extract` in models/preprocess.py.

use ndarray::{Array3, Zip};

use crate::error::SegmentError;
use crate::manifest::BrainStage;
use crate::model::Model;
use crate::preprocess::{normalise_zscore_above_mean, stack_channels, ModelGrid};
use crate::volume::Grid;

/// A brain mask on the reference grid and what was measured on it.
#[derive(Debug, Clone)]
pub struct BrainMask {
    /// 1 = brain, `[k, j, i]` like the reference volume.
    pub mask: Array3<u8>,
    pub voxels: usize,
    pub ml: f64,
    /// Fraction of the mask's surface area on the volume's boundary faces (0 when empty).
    pub edge_fraction: f64,
}

/// Runs the brain model of `stage` on the channels it reads (`on_ref`: every channel of the tumour
/// model on the reference `grid`, raw values) and measures the mask.
pub fn extract(
    brain: &Model,
    stage: &BrainStage,
    on_ref: &[Array3<f32>],
    grid: &Grid,
) -> Result<BrainMask, SegmentError> {
    let m = brain.manifest();
    let g = &m.file.geometry;
    let model_grid = ModelGrid {
        size: g.size,
        spacing: g.spacing_mm,
    };
    let channels: Vec<Array3<f32>> = stage
        .channels
        .iter()
        .map(|&c| {
            let mut x = model_grid.from_reference(on_ref[c].view(), grid, g.outside_value);
            normalise_zscore_above_mean(&mut x, m.file.normalisation.std_floor);
            x
        })
        .collect();
    let input = stack_channels(&channels);
    drop(channels);
    let logits = brain.run(input.view())?;
    let mask = model_grid.labels_on_reference(logits.view(), grid, m.classes());
    let voxels = mask.iter().filter(|&&v| v != 0).count();
    Ok(BrainMask {
        edge_fraction: edge_fraction(&mask, grid),
        ml: voxels as f64 * grid.voxel_ml(),
        voxels,
        mask,
    })
}

/// Fraction of the surface area of `mask` (faces between a mask voxel and a non-mask voxel or the
/// outside of the volume, weighted by the face's area in mm²) that lies on the volume's boundary.
pub fn edge_fraction(mask: &Array3<u8>, grid: &Grid) -> f64 {
    let dims = [mask.dim().0, mask.dim().1, mask.dim().2];
    let [sj, si] = grid.spacing;
    let sk = grid.slice_step;
    // area of a face whose normal is along k, j, i
    let area = [sj * si, si * sk, sj * sk];
    let (mut total, mut edge) = (0f64, 0f64);
    for ((k, j, i), &v) in mask.indexed_iter() {
        if v == 0 {
            continue;
        }
        let at = [k, j, i];
        for axis in 0..3 {
            for up in [false, true] {
                let n = at[axis];
                let neighbour = if up {
                    (n + 1 < dims[axis]).then_some(n + 1)
                } else {
                    n.checked_sub(1)
                };
                match neighbour {
                    None => {
                        total += area[axis];
                        edge += area[axis];
                    }
                    Some(n2) => {
                        let mut p = at;
                        p[axis] = n2;
                        if mask[p] == 0 {
                            total += area[axis];
                        }
                    }
                }
            }
        }
    }
    if total == 0.0 {
        0.0
    } else {
        edge / total
    }
}

/// Fails (permanently) when the mask is implausible by the stage's rules.
pub fn check(stage: &BrainStage, b: &BrainMask) -> Result<(), SegmentError> {
    let s = &stage.settings;
    let [lo, hi] = s.brain_ml;
    if !(b.ml >= lo && b.ml <= hi) {
        return Err(SegmentError::BrainExtraction(format!(
            "implausible brain volume {:.0} mL (plausible: {lo:.0}-{hi:.0} mL); \
             is this a brain MR study with the whole head in the field of view?",
            b.ml
        )));
    }
    if b.edge_fraction > s.max_edge_fraction {
        return Err(SegmentError::BrainExtraction(format!(
            "implausible brain mask: {:.0} % of its surface lies on the edge of the volume \
             (at most {:.0} % plausible); the mask fills the field of view",
            100.0 * b.edge_fraction,
            100.0 * s.max_edge_fraction
        )));
    }
    Ok(())
}

/// Sets every voxel outside the mask to `outside`.
pub fn strip(vol: &mut Array3<f32>, mask: &Array3<u8>, outside: f32) {
    Zip::from(vol).and(mask).for_each(|v, &m| {
        if m == 0 {
            *v = outside;
        }
    });
}

/// Clears every label outside the mask.
pub fn clear_outside(labels: &mut Array3<u8>, mask: &Array3<u8>) {
    Zip::from(labels).and(mask).for_each(|l, &m| {
        if m == 0 {
            *l = 0;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize, step: f64) -> Grid {
        Grid {
            slices: n,
            rows: n,
            cols: n,
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing: [1.0, 1.0],
            slice_step: step,
            origin: [0.0; 3],
        }
    }

    #[test]
    fn edge_fraction_of_inner_full_and_cut_masks() {
        let g = grid(10, 1.0);
        let mut m = Array3::<u8>::zeros((10, 10, 10));
        assert_eq!(edge_fraction(&m, &g), 0.0);
        // a 4x4x4 cube inside: no face on the boundary
        m.slice_mut(ndarray::s![3..7, 3..7, 3..7]).fill(1);
        assert_eq!(edge_fraction(&m, &g), 0.0);
        // everything: every face is on the boundary
        m.fill(1);
        assert_eq!(edge_fraction(&m, &g), 1.0);
        // a 4x4x4 cube cut by the first slice: its 16 bottom faces of 96 lie on the edge
        m.fill(0);
        m.slice_mut(ndarray::s![0..4, 3..7, 3..7]).fill(1);
        let f = edge_fraction(&m, &g);
        assert!((f - 16.0 / 96.0).abs() < 1e-12, "{f}");
        // thick slices weigh the in-plane faces more
        let f5 = edge_fraction(&m, &grid(10, 5.0));
        assert!(f5 < f, "{f5} vs {f}");
    }
}
