"""numpy reference of the `geometry.kind = "patch3d"` path (segmenter/src/canonical.rs, normalize.rs, patch3d.rs)
for training data, evaluation and the golden pair of 3D models (models/train3d.py, eval3d.py, make_golden3d.py).

Arrays on a DICOM grid are indexed [k, j, i] (slice, row, column; models/synth/synth.py Geometry).
1. Canonical axes: the reference voxel axes in NIfTI order (i, j, k), each given greedily the RAS world axis its
   direction is closest to; canonical axis m is the voxel axis given world axis orientation[m], flipped when it
   points the other way (nibabel io_orientation, MONAI Orientationd).
2. Spacing: N = round_half_even((n - 1) * s / t + 1); canonical voxel a samples source index q = a * t / s from
   the (flipped) axis' first voxel, trilinear, indices clamped to [0, n - 1] (MONAI Spacingd, padding "border").
3. crop_nonzero: the box of voxels non-zero in any channel; zscore_nonzero per channel over its nonzero voxels
   (MONAI NormalizeIntensityd(nonzero=True, channel_wise=True)); statistics in float64.
4. Back: a reference voxel's canonical index per axis is the inverse of 2; inside the box iff
   -0.5 <= index <= N - 0.5, clamped to [0, N - 1], probabilities interpolated trilinearly; outside: background.
Trilinear interpolation is applied here as three separable linear interpolations (the same weights as the Rust
code; the order of the float operations differs, so results agree to float32 rounding, not bit for bit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORLD = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass
class Axis:
    src: int  # reference array axis: 0 = k (slice), 1 = j (row), 2 = i (column)
    flip: bool
    n: int  # reference voxels along src
    s: float  # reference spacing (mm)
    N: int  # canonical voxels
    t: float  # canonical spacing (mm)

    def source_index(self, a):
        q = np.asarray(a, np.float64) * self.t / self.s
        return (self.n - 1) - q if self.flip else q

    def canonical_index(self, x):
        q = (self.n - 1) - np.asarray(x, np.float64) if self.flip else np.asarray(x, np.float64)
        return q * self.s / self.t


def _ras(v):
    return np.array([-v[0], -v[1], v[2]], float)


def canonical_axes(geom, orientation="RAS", spacing=(2.0, 2.0, 2.0)):
    """The three canonical axes of a synth.Geometry (reference grid)."""
    dirs = [_ras(geom.normal), _ras(geom.col_dir), _ras(geom.row_dir)]
    lens = [geom.slices, geom.rows, geom.cols]
    sps = [geom.slice_spacing, geom.row_spacing, geom.col_spacing]
    world_of = [None] * 3
    used = set()
    for v in (2, 1, 0):
        best = None
        for c in range(3):
            if c in used:
                continue
            if best is None or abs(dirs[v][c]) > abs(dirs[v][best]):
                best = c
        used.add(best)
        world_of[v] = best
    axes = []
    for m, code in enumerate(orientation):
        w, sign = WORLD[code]
        v = world_of.index(w)
        n, s, t = lens[v], float(sps[v]), float(spacing[m])
        N = int(np.round((n - 1) * s / t + 1))  # numpy rounds half to even
        axes.append(Axis(v, bool(dirs[v][w] * sign < 0), n, s, N, t))
    return axes


def _weights(pos, n):
    """Linear-interpolation matrix [len(pos), n] for source positions pos, clamped to [0, n - 1]."""
    x = np.clip(pos, 0, n - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), n - 1)
    x1 = np.minimum(x0 + 1, n - 1)
    f = x - x0
    w = np.zeros((len(pos), n))
    r = np.arange(len(pos))
    np.add.at(w, (r, x0), 1 - f)
    np.add.at(w, (r, x1), f)
    return w


def resample(vol, axes):
    """vol[k, j, i] on the reference grid -> [a, b, c] on the canonical grid (float32)."""
    v = np.transpose(vol.astype(np.float64), [ax.src for ax in axes])
    for m, ax in enumerate(axes):
        w = _weights(ax.source_index(np.arange(ax.N)), ax.n)
        v = np.moveaxis(np.tensordot(w, np.moveaxis(v, m, 0), axes=(1, 0)), 0, m)
    return v.astype(np.float32)


def canonical_geometry(geom, axes):
    """A synth.Geometry whose voxel centres are the canonical voxels (same directions as the reference grid),
    for rendering exact ground truth on the canonical grid; its array [k, j, i] maps to canonical [a, b, c] by
    `to_canonical_order`."""
    import synth

    by_src = {ax.src: ax for ax in axes}
    start = []
    for src in (0, 1, 2):
        ax = by_src[src]
        first = ax.source_index(ax.N - 1) if ax.flip else 0.0  # lowest source index sampled
        start.append(first * ax.s)
    pos = geom.position + start[2] * geom.row_dir + start[1] * geom.col_dir + start[0] * geom.normal
    return synth.Geometry(geom.row_dir, geom.col_dir, pos, by_src[1].N, by_src[2].N, by_src[1].t, by_src[2].t,
                          by_src[0].N, by_src[0].t, by_src[0].t)


def to_canonical_order(arr, axes):
    """arr[k, j, i] on canonical_geometry -> [a, b, c]."""
    out = np.transpose(arr, [ax.src for ax in axes])
    for m, ax in enumerate(axes):
        if ax.flip:
            out = np.flip(out, m)
    return np.ascontiguousarray(out)


def nonzero_box(channels):
    """[lo, hi) of the voxels non-zero in any channel (the whole grid when none is)."""
    nz = np.any(np.stack(channels) != 0, axis=0)
    if not nz.any():
        return (0, 0, 0), nz.shape
    idx = np.argwhere(nz)
    return tuple(idx.min(0)), tuple(idx.max(0) + 1)


def zscore_nonzero(x, std_floor=1e-8):
    """Per channel over its nonzero voxels: (x - mean) / max(std, floor) there, 0 elsewhere (float32)."""
    out = np.zeros_like(x, dtype=np.float32)
    for c in range(x.shape[0]):
        m = x[c] != 0
        if not m.any():
            out[c] = x[c]
            continue
        v = x[c][m].astype(np.float64)
        mu, sd = v.mean(), v.std()
        out[c][m] = ((v - mu) / max(sd, std_floor)).astype(np.float32)
    return out


def canonical_input(on_ref, geom, orientation="RAS", spacing=(2.0, 2.0, 2.0), crop=True):
    """Channels on the reference grid (list of [k, j, i]) -> (axes, box lo, normalised image [C, D0, D1, D2])."""
    axes = canonical_axes(geom, orientation, spacing)
    ch = [resample(x, axes) for x in on_ref]
    if crop:
        lo, hi = nonzero_box(ch)
    else:
        lo, hi = (0, 0, 0), ch[0].shape
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    x = np.stack([c[sl] for c in ch])
    return axes, lo, zscore_nonzero(x)


def to_reference(values, axes, offset, dims):
    """values[C, a, b, c] (a canonical box at `offset`) -> ([C, k, j, i] interpolated, inside mask [k, j, i])."""
    v = values.astype(np.float64)
    inside = []
    for m, ax in enumerate(axes):
        nref = dims[ax.src]
        a = ax.canonical_index(np.arange(nref)) - offset[m]
        nbox = values.shape[1 + m]
        ok = (a >= -0.5) & (a <= nbox - 0.5)
        w = _weights(a, nbox) * ok[:, None]
        v = np.moveaxis(np.tensordot(w, np.moveaxis(v, 1 + m, 0), axes=(1, 0)), 0, 1 + m)
        inside.append(ok)
    # v is [C, ref axis of canonical 0, ref axis of canonical 1, ref axis of canonical 2] -> [C, k, j, i]
    order = [ax.src for ax in axes]
    perm = [0] + [1 + order.index(src) for src in (0, 1, 2)]
    v = np.transpose(v, perm)
    ins = {ax.src: ok for ax, ok in zip(axes, inside)}
    mask = ins[0][:, None, None] & ins[1][None, :, None] & ins[2][None, None, :]
    return v.astype(np.float32), mask


def paint(probs, mask, paints):
    """Labels from region probabilities [C, ...]: 0, then each (channel, label, threshold) painted in order."""
    lab = np.zeros(probs.shape[1:], np.uint8)
    for ch, label, thr in paints:
        lab[probs[ch] >= thr] = label
    lab[~mask] = 0
    return lab
