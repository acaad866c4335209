//! `geometry.kind = "patch3d"`: a fixed-shape 3D network run over a canonical volume by a sliding
//! window, with MONAI's or nnU-Net v2's conventions, and its result mapped back to the reference
//! series' grid. The manifest's comments (models/parity-patch3d/model.toml) and
//! docs/BRING_YOUR_OWN_MODEL.md state every formula; the parity test
//! (segmenter/tests/integration/patch3d_parity.rs) runs MONAI and nnU-Net themselves on the same ONNX.
//!
//! The window, for an image [C, D0, D1, D2] (canonical, normalised) and a patch [P0, P1, P2]:
//! 1. an axis shorter than its patch is padded with zeros to P, diff / 2 before (both peers);
//! 2. window starts per axis (`positions`):
//!    - "monai" (`sliding_window_inference`): interval = P if P == D, else max(1, floor(P (1 -
//!      overlap))); n = the first d with d x interval + P >= D, plus 1; start_d = d x interval -
//!      max(d x interval + P - D, 0);
//!    - "nnunet" (`compute_steps_for_sliding_window`): n = ceil((D - P) / (P x step)) + 1; start_d =
//!      round_half_even(d x (D - P) / (n - 1)) (0 when n = 1);
//! 3. windows in row-major order of their starts (axis 0 slowest); each is predicted (with
//!    `mirror_axes`: the prediction plus, for every non-empty combination of the axes in
//!    itertools.combinations order, flip(net(flip(x))), divided by the number of terms), multiplied
//!    by the importance map w and added into an f32 accumulator; w is added into an f32 weight map;
//! 4. accumulator / weight map, padding removed.
//!
//! Importance maps (`blending`): "constant": 1. "gaussian" with `positions = "monai"` (MONAI
//! `compute_importance_map`, f32): g_d(x) = exp(x^2 / (-2 sigma_d^2)), x = t - (P_d - 1) / 2,
//! sigma_d = sigma_scale P_d; w = (g_0 g_1) g_2, then raised to max(min w, 1e-3). "gaussian" with
//! `positions = "nnunet"` (nnU-Net `compute_gaussian`, f64 then f32): scipy's gaussian_filter of a
//! unit impulse at P_d // 2 with sigma_d = sigma_scale P_d (truncate 4: radius = floor(4 sigma_d +
//! 0.5), kernel normalised to sum 1), divided by its maximum / 10; zeros raised to the smallest
//! non-zero value.

use std::time::{Duration, Instant};

use ndarray::{s, Array3, Array4, ArrayView4, Axis as NdAxis, Zip};

use crate::canonical::{nonzero_box, parse_orientation, Canonical};
use crate::error::SegmentError;
use crate::manifest::{ManifestFile, Paint, SlidingWindow};
use crate::model::Model;
use crate::normalize::normalise;
use crate::volume::Grid;

/// Largest patch side and patch volume a manifest may state (checked before anything is allocated).
pub const MAX_PATCH_SIDE: usize = 512;
pub const MAX_PATCH_VOXELS: usize = 1 << 24;
/// Most windows (before mirroring) one study may take.
pub const MAX_WINDOWS: usize = 1 << 16;
/// Most output channels.
pub const MAX_OUTPUT_CHANNELS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Positions {
    Monai { overlap: f64 },
    Nnunet { step: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Blending {
    Constant,
    Gaussian { sigma_scale: f64 },
}

/// The sliding window of a validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub patch: [usize; 3],
    pub positions: Positions,
    pub blending: Blending,
    pub mirror_axes: Vec<usize>,
}

impl Window {
    pub fn from_manifest(sw: &SlidingWindow) -> Self {
        let positions = match sw.positions.as_str() {
            "monai" => Positions::Monai {
                overlap: sw.overlap.unwrap_or(0.0),
            },
            _ => Positions::Nnunet {
                step: sw.step.unwrap_or(0.5),
            },
        };
        let blending = match sw.blending.as_str() {
            "gaussian" => Blending::Gaussian {
                sigma_scale: sw.sigma_scale.unwrap_or(0.125),
            },
            _ => Blending::Constant,
        };
        Window {
            patch: sw.patch_size,
            positions,
            blending,
            mirror_axes: sw.mirror_axes.clone(),
        }
    }

    /// Window starts along one axis of (padded) length `image` >= `patch`.
    pub fn starts(&self, image: usize, patch: usize) -> Vec<usize> {
        match self.positions {
            Positions::Monai { overlap } => monai_starts(image, patch, overlap),
            Positions::Nnunet { step } => nnunet_starts(image, patch, step),
        }
    }

    /// The importance map [P0, P1, P2].
    pub fn importance(&self) -> Array3<f32> {
        let p = self.patch;
        match (self.blending, self.positions) {
            (Blending::Constant, _) => Array3::ones(p),
            (Blending::Gaussian { sigma_scale }, Positions::Monai { .. }) => {
                monai_gaussian(p, sigma_scale)
            }
            (Blending::Gaussian { sigma_scale }, Positions::Nnunet { .. }) => {
                nnunet_gaussian(p, sigma_scale)
            }
        }
    }

    /// Mirroring combinations (each a list of axes), nnU-Net's order.
    pub fn mirror_combinations(&self) -> Vec<Vec<usize>> {
        mirror_combinations(&self.mirror_axes)
    }
}

/// Every non-empty combination of `axes` (each a list of axes), nnU-Net's order: by size, then
/// in the order of `axes` (itertools.combinations). Also slice2d's `geometry.mirror_axes`.
pub fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for size in 1..=axes.len() {
        combinations(axes, size, 0, &mut Vec::new(), &mut out);
    }
    out
}

/// Mirror axes are valid: each below `rank`, none twice. Also slice2d's `geometry.mirror_axes`.
pub fn distinct_axes_below(axes: &[usize], rank: usize) -> bool {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len() == axes.len() && sorted.iter().all(|&a| a < rank)
}

fn combinations(
    axes: &[usize],
    size: usize,
    from: usize,
    cur: &mut Vec<usize>,
    out: &mut Vec<Vec<usize>>,
) {
    if cur.len() == size {
        out.push(cur.clone());
        return;
    }
    for (i, &a) in axes.iter().enumerate().skip(from) {
        cur.push(a);
        combinations(axes, size, i + 1, cur, out);
        cur.pop();
    }
}

pub fn monai_starts(image: usize, patch: usize, overlap: f64) -> Vec<usize> {
    let interval = if patch == image {
        patch
    } else {
        ((patch as f64 * (1.0 - overlap)) as usize).max(1)
    };
    let num = image.div_ceil(interval);
    let scan = (0..num)
        .find(|d| d * interval + patch >= image)
        .map_or(1, |d| d + 1);
    (0..scan)
        .map(|d| {
            let start = d * interval;
            start - (start + patch).saturating_sub(image)
        })
        .collect()
}

pub fn nnunet_starts(image: usize, patch: usize, step: f64) -> Vec<usize> {
    let target = patch as f64 * step;
    let num = ((image - patch) as f64 / target).ceil() as usize + 1;
    if num <= 1 {
        return vec![0];
    }
    let actual = (image - patch) as f64 / (num - 1) as f64;
    (0..num)
        .map(|i| (actual * i as f64).round_ties_even() as usize)
        .collect()
}

/// MONAI `compute_importance_map(mode="gaussian")`, in f32 as MONAI computes it.
pub fn monai_gaussian(p: [usize; 3], sigma_scale: f64) -> Array3<f32> {
    let g: Vec<Vec<f32>> = p
        .iter()
        .map(|&n| {
            let sigma = n as f64 * sigma_scale;
            let denom = (-2.0 * sigma * sigma) as f32;
            (0..n)
                .map(|t| {
                    let x = (-(n as f64 - 1.0) / 2.0 + t as f64) as f32;
                    (x * x / denom).exp()
                })
                .collect()
        })
        .collect();
    let mut w = Array3::from_shape_fn(p, |(a, b, c)| (g[0][a] * g[1][b]) * g[2][c]);
    let min = w.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = (min as f64).max(1e-3) as f32;
    w.mapv_inplace(|v| v.max(floor));
    w
}

/// nnU-Net v2 `compute_gaussian(tile_size, sigma_scale, value_scaling_factor=10)` as float32.
pub fn nnunet_gaussian(p: [usize; 3], sigma_scale: f64) -> Array3<f32> {
    // scipy.ndimage.gaussian_filter of an impulse at P // 2: per axis the normalised 1D kernel.
    let k: Vec<Vec<f64>> = p
        .iter()
        .map(|&n| {
            let sigma = n as f64 * sigma_scale;
            let radius = (4.0 * sigma + 0.5) as i64;
            let sigma2 = sigma * sigma;
            let phi: Vec<f64> = (-radius..=radius)
                .map(|x| (-0.5 / sigma2 * (x * x) as f64).exp())
                .collect();
            let sum: f64 = phi.iter().sum();
            let centre = (n / 2) as i64;
            (0..n as i64)
                .map(|t| {
                    let d = t - centre;
                    if d.abs() <= radius {
                        phi[(d + radius) as usize] / sum
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let g = Array3::from_shape_fn(p, |(a, b, c)| (k[0][a] * k[1][b]) * k[2][c]);
    let max = g.iter().copied().fold(0.0f64, f64::max);
    let scale = max / 10.0;
    let mut w = g.mapv(|v| (v / scale) as f32);
    let min_nonzero = w
        .iter()
        .copied()
        .filter(|v| *v != 0.0)
        .fold(f32::INFINITY, f32::min);
    w.mapv_inplace(|v| if v == 0.0 { min_nonzero } else { v });
    w
}

/// Flips `x[c, a, b, d]` along the given spatial axes (0..3), into a new standard-layout array.
fn flip(x: ArrayView4<f32>, axes: &[usize]) -> Array4<f32> {
    let mut v = x;
    for &a in axes {
        v.invert_axis(NdAxis(a + 1));
    }
    v.as_standard_layout().into_owned()
}

/// The windows of an image of (padded) shape `dims`: their starts, row-major, bounded.
pub fn windows(win: &Window, dims: [usize; 3]) -> Result<Vec<[usize; 3]>, String> {
    let st: Vec<Vec<usize>> = (0..3).map(|d| win.starts(dims[d], win.patch[d])).collect();
    let n = st[0].len() * st[1].len() * st[2].len();
    if n > MAX_WINDOWS {
        return Err(format!(
            "{n} windows ({} x {} x {}) exceed the limit {MAX_WINDOWS}",
            st[0].len(),
            st[1].len(),
            st[2].len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for &a in &st[0] {
        for &b in &st[1] {
            for &c in &st[2] {
                out.push([a, b, c]);
            }
        }
    }
    Ok(out)
}

/// Why a sliding window stopped: the network failed, or the window grid is out of bounds.
#[derive(Debug)]
pub enum WindowError<E> {
    Network(E),
    Invalid(String),
}

/// The sliding-window prediction of `image[C, D0, D1, D2]`: `predict` maps one patch [C, P0, P1,
/// P2] (standard layout, flattened) to [K, P0, P1, P2]. Up to `threads` windows are predicted at
/// once; they are accumulated in window order, so the result does not depend on `threads`.
pub fn sliding_window<E: Send>(
    image: ArrayView4<f32>,
    outputs: usize,
    win: &Window,
    threads: usize,
    predict: impl Fn(&[f32]) -> Result<Vec<f32>, E> + Sync,
) -> Result<Array4<f32>, WindowError<E>> {
    let (c, d0, d1, d2) = image.dim();
    let dims = [d0, d1, d2];
    let p = win.patch;
    // 1. pad to the patch: diff / 2 before, the rest after, zeros.
    let padded_dims = [d0.max(p[0]), d1.max(p[1]), d2.max(p[2])];
    let before: Vec<usize> = (0..3).map(|d| (padded_dims[d] - dims[d]) / 2).collect();
    let padded: ndarray::CowArray<f32, ndarray::Ix4> = if padded_dims == dims {
        image.as_standard_layout()
    } else {
        let mut x = Array4::<f32>::zeros((c, padded_dims[0], padded_dims[1], padded_dims[2]));
        x.slice_mut(s![
            ..,
            before[0]..before[0] + d0,
            before[1]..before[1] + d1,
            before[2]..before[2] + d2
        ])
        .assign(&image);
        x.into()
    };
    let starts = windows(win, padded_dims).map_err(WindowError::Invalid)?;
    let w = win.importance();
    let combos = win.mirror_combinations();
    let mut acc = Array4::<f32>::zeros((outputs, padded_dims[0], padded_dims[1], padded_dims[2]));
    let mut weight = Array3::<f32>::zeros(padded_dims);
    let want = outputs * p[0] * p[1] * p[2];

    // One window: the network (and its mirrored runs), averaged as nnU-Net does.
    let run = |start: &[usize; 3]| -> Result<Array4<f32>, WindowError<E>> {
        let x = padded.slice(s![
            ..,
            start[0]..start[0] + p[0],
            start[1]..start[1] + p[1],
            start[2]..start[2] + p[2]
        ]);
        let shaped = |v: Result<Vec<f32>, E>| -> Result<Array4<f32>, WindowError<E>> {
            let v = v.map_err(WindowError::Network)?;
            if v.len() != want {
                return Err(WindowError::Invalid(format!(
                    "the network returned {} values for a patch, expected {want} ({outputs} x {p:?})",
                    v.len()
                )));
            }
            Ok(Array4::from_shape_vec((outputs, p[0], p[1], p[2]), v).expect("length checked"))
        };
        let x0 = x.as_standard_layout();
        let mut pred = shaped(predict(x0.as_slice().expect("standard layout")))?;
        for axes in &combos {
            let xf = flip(x, axes);
            let y = shaped(predict(xf.as_slice().expect("standard layout")))?;
            pred += &flip(y.view(), axes);
        }
        if !combos.is_empty() {
            let n = (combos.len() + 1) as f32;
            pred.mapv_inplace(|v| v / n);
        }
        Ok(pred)
    };

    let threads = threads.max(1);
    for chunk in starts.chunks(threads) {
        let preds: Vec<Result<Array4<f32>, WindowError<E>>> = if chunk.len() == 1 {
            vec![run(&chunk[0])]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|start| scope.spawn(|| run(start)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("inference thread panicked"))
                    .collect()
            })
        };
        for (start, pred) in chunk.iter().zip(preds) {
            let pred = pred?;
            let sl = s![
                start[0]..start[0] + p[0],
                start[1]..start[1] + p[1],
                start[2]..start[2] + p[2]
            ];
            for (mut dst, src) in acc.outer_iter_mut().zip(pred.outer_iter()) {
                Zip::from(dst.slice_mut(sl))
                    .and(&src)
                    .and(&w)
                    .for_each(|d, &v, &w| *d += v * w);
            }
            Zip::from(weight.slice_mut(sl))
                .and(&w)
                .for_each(|d, &w| *d += w);
        }
    }
    for mut ch in acc.outer_iter_mut() {
        ch.zip_mut_with(&weight, |v, &w| *v /= w);
    }
    let out = acc
        .slice(s![
            ..,
            before[0]..before[0] + d0,
            before[1]..before[1] + d1,
            before[2]..before[2] + d2
        ])
        .to_owned();
    Ok(out)
}

/// Softmax over the channel axis (in place), max-subtracted, in f32.
fn softmax(x: &mut Array4<f32>) {
    let k = x.dim().0;
    let mut col = vec![0f32; k];
    for mut lane in x.lanes_mut(NdAxis(0)) {
        let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (c, v) in lane.iter().enumerate() {
            col[c] = (v - max).exp();
            sum += col[c];
        }
        for (v, e) in lane.iter_mut().zip(&col) {
            *v = e / sum;
        }
    }
}

/// The label of a voxel from its interpolated output channels.
pub fn decide(kind: &str, classes: &[u8], paint: &[Paint], values: &[f32]) -> u8 {
    if kind == "sigmoid_regions" {
        let mut label = 0;
        for p in paint {
            if values[p.channel] >= p.threshold {
                label = p.label;
            }
        }
        label
    } else {
        let mut best = 0;
        for (c, v) in values.iter().enumerate() {
            if *v > values[best] {
                best = c;
            }
        }
        classes[best]
    }
}

/// What the patch3d path spent its time on.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

/// The canonical, normalised network input of a study: `on_ref` are the channels on the reference
/// grid. Returns the canonical grid, the crop box's offset and the image [C, D0, D1, D2].
pub fn canonical_input(
    file: &ManifestFile,
    on_ref: &[Array3<f32>],
    grid: &Grid,
) -> Result<(Canonical, [usize; 3], Array4<f32>), String> {
    let g = &file.geometry;
    let canonical = Canonical::new(
        grid,
        g.orientation.as_deref().unwrap_or("RAS"),
        g.target_spacing_mm.unwrap_or([1.0; 3]),
    )?;
    let mut channels: Vec<Array3<f32>> = on_ref
        .iter()
        .map(|x| canonical.resample(x.view()))
        .collect();
    let (lo, hi) = if g.crop_nonzero.unwrap_or(false) {
        nonzero_box(&channels)
    } else {
        let s = canonical.shape();
        ([0; 3], s)
    };
    if g.crop_nonzero.unwrap_or(false) {
        channels = channels
            .into_iter()
            .map(|x| {
                x.slice(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
                    .to_owned()
            })
            .collect();
    }
    normalise(&mut channels, &file.normalisation);
    let views: Vec<_> = channels.iter().map(|c| c.view()).collect();
    let image = ndarray::stack(NdAxis(0), &views).map_err(|e| e.to_string())?;
    Ok((canonical, lo, image))
}

/// Segments a study's channels (on the reference grid, brain-stripped if the manifest says so)
/// with a patch3d model: labels on the reference grid.
pub fn segment_on_reference(
    model: &Model,
    on_ref: &[Array3<f32>],
    grid: &Grid,
    reference_series_uid: &str,
) -> Result<(Array3<u8>, Timings), SegmentError> {
    let file = &model.manifest().file;
    let mut t = Timings::default();
    let geometry = |message: String| SegmentError::Geometry {
        series_uid: reference_series_uid.to_string(),
        message,
    };
    let started = Instant::now();
    let (canonical, offset, image) = canonical_input(file, on_ref, grid).map_err(geometry)?;
    t.preprocess = started.elapsed();

    let started = Instant::now();
    let sw = file.sliding_window.as_ref().expect("validated patch3d");
    let win = Window::from_manifest(sw);
    let outputs = file.model.output_shape[1];
    let mut logits = sliding_window(image.view(), outputs, &win, model.threads(), |x| {
        model.run_patch(x)
    })
    .map_err(|e| match e {
        WindowError::Network(e) => e,
        WindowError::Invalid(m) => geometry(m),
    })?;
    drop(image);
    t.inference = started.elapsed();

    let started = Instant::now();
    match file.output.activation.as_str() {
        "softmax" => softmax(&mut logits),
        "sigmoid" => logits.mapv_inplace(|v| 1.0 / (1.0 + (-v).exp())),
        _ => {}
    }
    let o = &file.output;
    let labels = canonical.to_reference(
        logits.view(),
        offset,
        (grid.slices, grid.rows, grid.cols),
        |v| decide(&o.kind, &o.classes, &o.paint, v),
    );
    t.postprocess = started.elapsed();
    Ok((labels, t))
}

/// Validates the patch3d parts of a manifest (called by `Manifest::load`).
pub fn validate_manifest(file: &ManifestFile) -> Result<(), String> {
    let g = &file.geometry;
    if g.size != [0, 0] || g.spacing_mm != [0.0, 0.0] {
        return Err(
            "geometry.size and geometry.spacing_mm are slice2d fields; patch3d uses \
                    sliding_window.patch_size and geometry.target_spacing_mm"
                .into(),
        );
    }
    if !g.mirror_axes.is_empty() {
        return Err(
            "geometry.mirror_axes is the slice2d field; patch3d mirrors by sliding_window.mirror_axes"
                .into(),
        );
    }
    parse_orientation(
        g.orientation
            .as_deref()
            .ok_or("geometry.orientation is required for patch3d (e.g. \"RAS\")")?,
    )
    .map_err(|e| format!("geometry.{e}"))?;
    let spacing = g
        .target_spacing_mm
        .ok_or("geometry.target_spacing_mm is required for patch3d")?;
    if !spacing
        .iter()
        .all(|s| s.is_finite() && (0.05..=50.0).contains(s))
    {
        return Err(format!(
            "geometry.target_spacing_mm {spacing:?} must be within [0.05, 50] mm"
        ));
    }
    for (what, value) in [
        (
            "geometry.inter_series_interpolation",
            &g.inter_series_interpolation,
        ),
        ("geometry.in_plane_interpolation", &g.in_plane_interpolation),
    ] {
        if value != "trilinear" {
            return Err(format!(
                "{what} {value:?} is not supported for patch3d (supported: \"trilinear\")"
            ));
        }
    }
    if !g.outside_value.is_finite() {
        return Err("geometry.outside_value must be finite".into());
    }
    let sw = file
        .sliding_window
        .as_ref()
        .ok_or("[sliding_window] is required for patch3d")?;
    let p = sw.patch_size;
    if p.iter().any(|&s| s == 0 || s > MAX_PATCH_SIDE)
        || p.iter().product::<usize>() > MAX_PATCH_VOXELS
    {
        return Err(format!(
            "sliding_window.patch_size {p:?}: each side must be 1..={MAX_PATCH_SIDE} and the \
             patch at most {MAX_PATCH_VOXELS} voxels"
        ));
    }
    match (sw.positions.as_str(), sw.overlap, sw.step) {
        ("monai", Some(o), None) if (0.0..1.0).contains(&o) => {}
        ("nnunet", None, Some(s)) if s > 0.0 && s <= 1.0 => {}
        ("monai", ..) => {
            return Err(
                "sliding_window.positions \"monai\" takes overlap in [0, 1) (and no step)".into(),
            )
        }
        ("nnunet", ..) => {
            return Err(
                "sliding_window.positions \"nnunet\" takes step in (0, 1] (and no overlap)".into(),
            )
        }
        (other, ..) => {
            return Err(format!(
                "sliding_window.positions {other:?} is not supported (\"monai\", \"nnunet\")"
            ))
        }
    }
    match (sw.blending.as_str(), sw.sigma_scale) {
        ("constant", None) => {}
        ("gaussian", Some(s)) if s > 0.0 && s <= 10.0 => {}
        (b, _) => {
            return Err(format!(
                "sliding_window.blending {b:?}: \"constant\" (no sigma_scale) or \"gaussian\" \
                 with sigma_scale in (0, 10]"
            ))
        }
    }
    if !distinct_axes_below(&sw.mirror_axes, 3) {
        return Err(format!(
            "sliding_window.mirror_axes {:?} must be distinct axes among 0, 1, 2",
            sw.mirror_axes
        ));
    }
    let n = file.inputs.len();
    if file.model.input_shape != [1, n, p[0], p[1], p[2]] {
        return Err(format!(
            "model.input_shape {:?} must be [1, {n}, {}, {}, {}] (inputs and sliding_window.patch_size)",
            file.model.input_shape, p[0], p[1], p[2]
        ));
    }
    let os = &file.model.output_shape;
    if os.len() != 5 || os[0] != 1 || os[2..] != p[..] || os[1] == 0 || os[1] > MAX_OUTPUT_CHANNELS
    {
        return Err(format!(
            "model.output_shape {os:?} must be [1, K, {}, {}, {}] with 1 <= K <= {MAX_OUTPUT_CHANNELS}",
            p[0], p[1], p[2]
        ));
    }
    let k = os[1];
    let nm = &file.normalisation;
    match (nm.method.as_str(), nm.scope.as_str(), nm.percentiles) {
        ("zscore_above_mean", "volume", None) => {}
        ("zscore_nonzero", "channel_nonzero" | "any_channel_nonzero", None) => {}
        ("percentile_clip", "volume" | "channel_nonzero", Some([lo, hi]))
            if (0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo < hi => {}
        (m, s, _) => {
            return Err(format!(
                "normalisation method {m:?} with scope {s:?} is not supported for patch3d: \
                 zscore_above_mean (scope \"volume\"), zscore_nonzero (scope \"channel_nonzero\" \
                 or \"any_channel_nonzero\"), percentile_clip (scope \"volume\" or \
                 \"channel_nonzero\", percentiles = [lo, hi] within [0, 100])"
            ))
        }
    }
    if !(nm.std_floor.is_finite() && nm.std_floor > 0.0) {
        return Err("normalisation.std_floor must be > 0".into());
    }
    let o = &file.output;
    if o.resample_back != "trilinear_probabilities" {
        return Err(format!(
            "output.resample_back {:?} is not supported for patch3d (\"trilinear_probabilities\")",
            o.resample_back
        ));
    }
    let mut seg_labels: Vec<u8> = file.segments.iter().map(|s| s.label).collect();
    seg_labels.sort_unstable();
    let unique = {
        let mut l = seg_labels.clone();
        l.dedup();
        l.len() == seg_labels.len()
    };
    if !unique || seg_labels.contains(&0) {
        return Err("[[segments]] labels must be distinct and non-zero".into());
    }
    match o.kind.as_str() {
        "logits" => {
            if !["softmax", "none"].contains(&o.activation.as_str()) {
                return Err(format!(
                    "output.activation {:?} is not supported for logits (softmax, none)",
                    o.activation
                ));
            }
            if !o.paint.is_empty() {
                return Err("output.paint is for kind \"sigmoid_regions\"".into());
            }
            if o.classes.len() != k || o.classes.first() != Some(&0) {
                return Err(format!(
                    "output.classes {:?} must give the label of each of the {k} output channels, \
                     starting with 0 (background)",
                    o.classes
                ));
            }
            if o.classes[1..] != file.segments.iter().map(|s| s.label).collect::<Vec<_>>()[..] {
                return Err(
                    "[[segments]] labels must list every non-background class in order".into(),
                );
            }
        }
        "sigmoid_regions" => {
            if !["sigmoid", "none"].contains(&o.activation.as_str()) {
                return Err(format!(
                    "output.activation {:?} is not supported for sigmoid_regions (sigmoid, none)",
                    o.activation
                ));
            }
            if !o.classes.is_empty() {
                return Err(
                    "output.classes is for kind \"logits\"; sigmoid_regions paints \
                            output.paint labels"
                        .into(),
                );
            }
            if o.paint.is_empty() {
                return Err("output.paint must name at least one region channel".into());
            }
            for pt in &o.paint {
                if pt.channel >= k || pt.label == 0 || !pt.threshold.is_finite() {
                    return Err(format!(
                        "output.paint {pt:?}: channel must be < {k}, label non-zero, threshold finite"
                    ));
                }
            }
            let mut painted: Vec<u8> = o.paint.iter().map(|p| p.label).collect();
            painted.sort_unstable();
            painted.dedup();
            if painted != seg_labels {
                return Err(format!(
                    "[[segments]] labels {seg_labels:?} must be exactly the painted labels {painted:?}"
                ));
            }
        }
        other => {
            return Err(format!(
                "output.kind {other:?} is not supported (\"logits\", \"sigmoid_regions\")"
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_follow_each_peer() {
        // MONAI: interval 16; 60 -> 0, 16, 28 (the last one moved back to end at the edge).
        assert_eq!(monai_starts(60, 32, 0.5), vec![0, 16, 28]);
        assert_eq!(monai_starts(40, 24, 0.5), vec![0, 12, 16]);
        assert_eq!(monai_starts(16, 16, 0.5), vec![0]);
        // nnU-Net's own docstring example: 110, patch 64, step 0.5 -> 0, 23, 46.
        assert_eq!(nnunet_starts(110, 64, 0.5), vec![0, 23, 46]);
        assert_eq!(nnunet_starts(40, 24, 0.5), vec![0, 8, 16]);
        assert_eq!(nnunet_starts(24, 24, 0.5), vec![0]);
    }

    #[test]
    fn gaussians_peak_where_each_peer_puts_the_centre() {
        let m = monai_gaussian([4, 5, 6], 0.125);
        // MONAI centres at (P - 1) / 2: symmetric, the two middle voxels of an even side equal.
        assert_eq!(m[[1, 2, 2]], m[[2, 2, 3]]);
        assert!(m.iter().all(|v| (1e-3..=1.0).contains(v)));
        let n = nnunet_gaussian([4, 5, 6], 0.125);
        // nnU-Net centres at P // 2 and scales the peak to 10.
        assert_eq!(n[[2, 2, 3]], 10.0);
        assert!(n[[1, 2, 3]] < n[[2, 2, 3]]);
        assert!(n.iter().all(|&v| v > 0.0));
    }

    #[test]
    fn mirror_combinations_in_itertools_order() {
        let w = Window {
            patch: [2, 2, 2],
            positions: Positions::Nnunet { step: 0.5 },
            blending: Blending::Constant,
            mirror_axes: vec![0, 1, 2],
        };
        assert_eq!(
            w.mirror_combinations(),
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
    }

    #[test]
    fn identity_network_gives_back_its_input_with_padding_removed() {
        // A network that returns its input (K = C): every blending averages equal values.
        let img = Array4::from_shape_fn((2, 9, 5, 7), |(c, a, b, d)| {
            (c * 1000 + a * 100 + b * 10 + d) as f32
        });
        for (positions, blending, mirror) in [
            (
                Positions::Monai { overlap: 0.5 },
                Blending::Constant,
                vec![],
            ),
            (
                Positions::Monai { overlap: 0.25 },
                Blending::Gaussian { sigma_scale: 0.125 },
                vec![],
            ),
            (
                Positions::Nnunet { step: 0.5 },
                Blending::Gaussian { sigma_scale: 0.125 },
                vec![0, 2],
            ),
        ] {
            let win = Window {
                patch: [4, 8, 3],
                positions,
                blending,
                mirror_axes: mirror,
            };
            let out = sliding_window(img.view(), 2, &win, 3, |x| Ok::<_, ()>(x.to_vec())).unwrap();
            assert_eq!(out.dim(), img.dim());
            for (a, b) in out.iter().zip(img.iter()) {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn paint_order_and_argmax_decide_labels() {
        // MONAI brats bundle: channels TC, WT, ET painted WT -> 2, TC -> 1, ET -> 4.
        let paint = [
            Paint {
                channel: 1,
                label: 2,
                threshold: 0.5,
            },
            Paint {
                channel: 0,
                label: 1,
                threshold: 0.5,
            },
            Paint {
                channel: 2,
                label: 4,
                threshold: 0.5,
            },
        ];
        assert_eq!(decide("sigmoid_regions", &[], &paint, &[0.9, 0.9, 0.9]), 4);
        assert_eq!(decide("sigmoid_regions", &[], &paint, &[0.9, 0.9, 0.1]), 1);
        assert_eq!(decide("sigmoid_regions", &[], &paint, &[0.1, 0.5, 0.1]), 2);
        assert_eq!(decide("sigmoid_regions", &[], &paint, &[0.1, 0.4, 0.9]), 4);
        assert_eq!(decide("sigmoid_regions", &[], &paint, &[0.1, 0.4, 0.4]), 0);
        assert_eq!(
            decide("logits", &[0, 1, 2, 3], &[], &[0.1, 0.5, 0.5, 0.2]),
            1
        );
    }

    fn parity_manifest(edit: impl Fn(String) -> String) -> Result<(), String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/parity-patch3d/model.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let edited = edit(text.clone());
        toml::from_str::<ManifestFile>(&edited)
            .map_err(|e| e.to_string())
            .and_then(|f| validate_manifest(&f))
    }

    #[test]
    fn crop_nonzero_crops_the_canonical_input_to_the_union_box() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/parity-patch3d/model.toml");
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("crop_nonzero = false", "crop_nonzero = true")
            .replace("orientation = \"RAS\"", "orientation = \"LPS\"");
        let file: ManifestFile = toml::from_str(&text).unwrap();
        let grid = Grid {
            slices: 6,
            rows: 8,
            cols: 10,
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing: [1.0, 1.0],
            slice_step: 1.0,
            origin: [0.0; 3],
        };
        let mut on_ref = vec![Array3::<f32>::zeros((6, 8, 10)); 4];
        on_ref[0][[2, 3, 4]] = 5.0;
        on_ref[0][[4, 1, 7]] = 7.0;
        on_ref[3][[4, 1, 7]] = 7.0;
        let (c, offset, image) = canonical_input(&file, &on_ref, &grid).unwrap();
        assert_eq!(c.shape(), [10, 8, 6]);
        // LPS canonical (a, b, s) = reference (i, j, k): box a 4..8, b 1..4, s 2..5.
        assert_eq!(offset, [4, 1, 2]);
        assert_eq!(image.dim(), (4, 4, 3, 3));
        // Channel 0: zscore over its two non-zero voxels (5, 7): -1 and +1 where they land.
        assert_eq!(image[[0, 0, 2, 0]], -1.0);
        assert_eq!(image[[0, 3, 0, 2]], 1.0);
        assert_eq!(image.iter().filter(|v| **v != 0.0).count(), 2);
    }

    #[test]
    fn patch3d_manifest_errors_are_clear() {
        parity_manifest(|t| t).unwrap();
        let err = |from: &str, to: &str| {
            parity_manifest(|t| {
                assert!(t.contains(from), "{from}");
                t.replacen(from, to, 1)
            })
            .unwrap_err()
        };
        let e = err("patch_size = [32, 24, 16]", "patch_size = [32, 24, 8]");
        assert!(e.contains("model.input_shape"), "{e}");
        let e = err("patch_size = [32, 24, 16]", "patch_size = [1024, 24, 16]");
        assert!(e.contains("1..=512"), "{e}");
        let e = err("overlap = 0.5", "step = 0.5");
        assert!(e.contains("\"monai\" takes overlap"), "{e}");
        let e = err("\nblending = \"constant\"", "\nblending = \"gaussian\"");
        assert!(e.contains("sigma_scale"), "{e}");
        let e = err(
            "\nblending = \"constant\"",
            "\nblending = \"constant\"\nmirror_axes = [0, 0]",
        );
        assert!(e.contains("mirror_axes"), "{e}");
        // slice2d's in-plane mirroring is not patch3d's
        let e = err(
            "orientation = \"RAS\"",
            "orientation = \"RAS\"\nmirror_axes = [0]",
        );
        assert!(e.contains("sliding_window.mirror_axes"), "{e}");
        let e = err("channel = 2\nlabel = 4", "channel = 2\nlabel = 5");
        assert!(e.contains("painted labels"), "{e}");
        let e = err("channel = 2\nlabel = 4", "channel = 3\nlabel = 4");
        assert!(e.contains("channel must be < 3"), "{e}");
        let e = err(
            "\nkind = \"patch3d\"",
            "\nkind = \"patch3d\"\nsize = [128, 128]",
        );
        assert!(e.contains("slice2d fields"), "{e}");
        let e = err("scope = \"channel_nonzero\"", "scope = \"volume\"");
        assert!(e.contains("zscore_nonzero"), "{e}");
        let e = err("orientation = \"RAS\"", "orientation = \"RAX\"");
        assert!(e.contains("geometry.orientation"), "{e}");
        let e = err(
            "target_spacing_mm = [1.0, 1.0, 1.0]",
            "target_spacing_mm = [0.0, 1.0, 1.0]",
        );
        assert!(e.contains("target_spacing_mm"), "{e}");
    }
}
