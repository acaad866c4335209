"""Reference implementation (numpy) of the preprocessing and postprocessing that models/*/model.toml describe
for `kind = "slice2d"` models. The Rust segmenter must reproduce exactly this; training and evaluation use it.

Arrays on a DICOM grid are indexed [k, j, i] = [slice, row, column] (see models/synth/synth.py Geometry).

1. Every channel is brought onto the reference series' grid (trilinear in patient coordinates, 0 outside its
   field of view). When the series share the reference geometry this is the identity.
2. `to_model_grid`: each reference slice is resampled (bilinear, 0 outside the image) onto a size x size grid of
   `spacing` mm, axes along the reference row/column directions, centred on the slice centre:
       model pixel (v=row, u=col) samples reference continuous index
       i = (cols-1)/2 + (u - (size-1)/2) * spacing / col_spacing
       j = (rows-1)/2 + (v - (size-1)/2) * spacing / row_spacing
3. `normalise`: per channel over the whole model-grid volume (all slices, all size x size pixels, raw stored
   values after Rescale Slope/Intercept): m = mean(x); F = {x > m}; mu = mean(x[F]); sd = std(x[F]) (ddof 0);
   x' = (x - mu) / max(sd, 1e-6). float32 (statistics accumulated in float64).
4. The network runs slice by slice: input [1, C, size, size] float32 (channel order of the manifest), output
   [1, K, size, size] logits.
5. `from_model_grid`: logits are resampled back onto each reference slice (bilinear, inverse of the mapping in 2;
   points outside the model grid get label 0) and the label is the argmax over classes (first maximum wins).
"""
from __future__ import annotations

import numpy as np


def bilinear2d(img: np.ndarray, jj: np.ndarray, ii: np.ndarray, fill=0.0) -> np.ndarray:
    """Sample img[..., rows, cols] at continuous (row j, col i) indices.
    Inside iff 0 <= j <= rows-1 and 0 <= i <= cols-1, else `fill`. j0 = min(floor(j), rows-2), fj = j - j0
    (likewise i0, fi); value = (1-fj)*((1-fi)*img[j0,i0] + fi*img[j0,i0+1]) + fj*((1-fi)*img[j0+1,i0] + fi*img[j0+1,i0+1])."""
    rows, cols = img.shape[-2:]
    inside = (jj >= 0) & (jj <= rows - 1) & (ii >= 0) & (ii <= cols - 1)
    j0 = np.clip(np.floor(jj), 0, rows - 2).astype(np.int64)
    i0 = np.clip(np.floor(ii), 0, cols - 2).astype(np.int64)
    fj = (jj - j0).astype(np.float32)
    fi = (ii - i0).astype(np.float32)
    a = img[..., j0, i0]
    b = img[..., j0, i0 + 1]
    c = img[..., j0 + 1, i0]
    d = img[..., j0 + 1, i0 + 1]
    out = (1 - fj) * ((1 - fi) * a + fi * b) + fj * ((1 - fi) * c + fi * d)
    return np.where(inside, out, np.float32(fill)).astype(np.float32)


def model_grid_indices(rows, cols, row_spacing, col_spacing, size, spacing):
    """Continuous reference (j, i) indices [size, size] of the model-grid pixels."""
    v, u = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    ii = (cols - 1) / 2.0 + (u - (size - 1) / 2.0) * spacing / col_spacing
    jj = (rows - 1) / 2.0 + (v - (size - 1) / 2.0) * spacing / row_spacing
    return jj, ii


def to_model_grid(vol: np.ndarray, row_spacing, col_spacing, size=128, spacing=2.0) -> np.ndarray:
    """vol[C, K, rows, cols] (or [K, rows, cols]) -> [..., K, size, size] float32."""
    rows, cols = vol.shape[-2:]
    jj, ii = model_grid_indices(rows, cols, row_spacing, col_spacing, size, spacing)
    return bilinear2d(vol.astype(np.float32), jj, ii)


def normalise(x: np.ndarray) -> np.ndarray:
    """x[C, ...]: per-channel z-score over voxels above the channel mean."""
    out = np.empty(x.shape, np.float32)
    for ch in range(x.shape[0]):
        a = x[ch].astype(np.float64)
        m = a.mean()
        f = a[a > m]
        mu = f.mean() if f.size else 0.0
        sd = f.std() if f.size else 1.0
        out[ch] = ((a - mu) / max(sd, 1e-6)).astype(np.float32)
    return out


def from_model_grid(logits: np.ndarray, rows, cols, row_spacing, col_spacing, size=128, spacing=2.0) -> np.ndarray:
    """logits[K_classes, S, size, size] -> labels uint8[S, rows, cols] on the reference grid."""
    j, i = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    u = (size - 1) / 2.0 + (i - (cols - 1) / 2.0) * col_spacing / spacing
    v = (size - 1) / 2.0 + (j - (rows - 1) / 2.0) * row_spacing / spacing
    res = bilinear2d(logits.astype(np.float32), v, u, fill=np.nan)  # [K, S, rows, cols]
    outside = np.isnan(res[0])
    lab = np.argmax(np.nan_to_num(res, nan=-np.inf), axis=0).astype(np.uint8)
    lab[outside] = 0
    return lab


def edge_fraction(mask: np.ndarray, spacing_k: float, row_spacing: float, col_spacing: float) -> float:
    """Fraction of the surface area of mask[K, rows, cols] (faces between a mask voxel and a non-mask voxel or
    the outside of the volume, weighted by face area in mm^2) lying on the volume's boundary faces."""
    m = np.pad(mask.astype(bool), 1)
    area = (row_spacing * col_spacing, col_spacing * spacing_k, row_spacing * spacing_k)
    total = edge = 0.0
    for ax in range(3):
        a = np.diff(m.astype(np.int8), axis=ax) != 0  # faces where inside/outside changes
        n = a.shape[ax]
        first = np.take(a, 0, axis=ax).sum() + np.take(a, n - 1, axis=ax).sum()
        total += a.sum() * area[ax]
        edge += first * area[ax]
    return 0.0 if total == 0 else float(edge / total)


def brain_extract(vols: dict, mask: np.ndarray, outside_value: float) -> dict:
    """`[brain_extraction]`: every channel on the reference grid gets outside_value outside the mask (before the
    model-grid resampling and the normalisation); labels outside the mask are cleared by the caller."""
    return {c: np.where(mask > 0, v, np.float32(outside_value)).astype(np.float32) for c, v in vols.items()}
