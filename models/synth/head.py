"""A procedural head around the synthetic brain (issue 14): what a study from a PACS has and BraTS data has not.

Everything here lives in *template space* (the MNI ICBM152 2009a grid of ``synth.py``), so the head deforms with
the case's random affine and elastic field exactly as the brain does. The template is brain-extracted; its mask
(template T1 > 0) is the ground-truth **brain mask** (brain + the CSF inside it), the region a BraTS-trained
model expects to see and everything else zero.

Outside the mask, by distance d (mm) from the brain surface (an approximately Euclidean distance map of the
template mask, computed once per process by alternating 6- and 26-neighbour dilations), in layers whose
thicknesses are drawn per case and modulated over the surface by a smooth random field (+-35 %):
    CSF rim (0.8-3 mm)  -> inner table (cortical bone, 0.8-2 mm) -> diploe (marrow fat, 1.5-6 mm)
    -> outer table (0.8-2 mm) -> [temporal muscle, laterally, 0-14 mm] -> subcutaneous fat (1.5-8 mm)
    -> skin (1-3 mm) -> air.
Below the brain (template z < -20 mm, fading in) a soft-tissue block (face, skull base, upper neck: muscle/fat
texture) extends down to the end of the field of view, with two eyes (vitreous) in orbital fat, maxillary and
sphenoid sinuses and a frontal sinus in the diploe (air). Per-contrast intensities of every tissue are drawn per
case (x 0.7-1.3 of a base value; fat bright on T1 and T2, vitreous bright on T2, bone and air dark everywhere).

Per-case nuisance added for heads: a bias field that may be strong (polynomial coefficients N(0, 0.35) instead of
N(0, 0.12)), and in-plane motion blur (ghost averaging over 0-3 pixels along a random in-plane axis). The field of
view is chosen by the caller (``random_head_geometry``): axial, sagittal, coronal or oblique stacks with coverage
that may cut the vertex or the neck.

Nothing here touches the random draws of ``synth.make_case``: the head parameters come from their own generator
(``default_rng([seed, 0x4EAD])``), so a skull-stripped case is bit-identical to what it was before heads existed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 48  # voxels (mm) of padding around the template grid for the head layers

# base relative intensities per contrast for: marrow, fat, skin, muscle, vitreous, bone
HEAD_INTENSITY = {
    "T1": (0.85, 1.05, 0.55, 0.42, 0.20, 0.04),
    "T1CE": (0.90, 1.05, 0.70, 0.52, 0.20, 0.04),
    "T2": (0.60, 0.85, 0.50, 0.28, 1.10, 0.03),
    "FLAIR": (0.70, 0.85, 0.50, 0.30, 0.15, 0.03),
}

_DIST = None


def _dilate(m, cube):
    out = m.copy()
    if cube:
        for ax in range(3):
            t = out.copy()
            sl_a = [slice(None)] * 3
            sl_b = [slice(None)] * 3
            sl_a[ax], sl_b[ax] = slice(1, None), slice(None, -1)
            t[tuple(sl_a)] |= out[tuple(sl_b)]
            t[tuple(sl_b)] |= out[tuple(sl_a)]
            out = t
    else:
        for ax in range(3):
            sl_a = [slice(None)] * 3
            sl_b = [slice(None)] * 3
            sl_a[ax], sl_b[ax] = slice(1, None), slice(None, -1)
            out[tuple(sl_a)] |= m[tuple(sl_b)]
            out[tuple(sl_b)] |= m[tuple(sl_a)]
    return out


def distance_outside(mask_padded: np.ndarray, steps: int = PAD - 2) -> np.ndarray:
    """Octagonal (alternating city-block / chessboard) distance in voxels outside a boolean mask, capped at steps.
    Within ~8 % of the Euclidean distance, good enough for layer thicknesses drawn at random anyway."""
    d = np.full(mask_padded.shape, float(steps), np.float32)
    cur = mask_padded.copy()
    d[cur] = 0.0
    for s in range(1, steps):
        cur = _dilate(cur, cube=(s % 2 == 0))
        new = cur & (d == steps)
        d[new] = s
    # smooth the staircase a little: 3-tap box along each axis
    for ax in range(3):
        d = (np.roll(d, 1, ax) + d + np.roll(d, -1, ax)) / 3.0
    d[mask_padded] = np.minimum(d[mask_padded], 0.0)
    return d.astype(np.float32)


def load_distance():
    """Distance (mm) outside the template brain mask on the template grid padded by PAD voxels."""
    global _DIST
    if _DIST is None:
        import synth

        data, _ = synth.load_anatomy()
        m = np.pad(data[..., 3] > 0.5, PAD)
        _DIST = distance_outside(m)
    return _DIST


@dataclass
class Head:
    t_csf: float
    t_inner: float
    t_dipl: float
    t_outer: float
    t_muscle: float
    t_fat: float
    t_skin: float
    thick_noise: np.ndarray  # coarse grid modulating all thicknesses
    tex_noise: np.ndarray  # coarse grid for soft-tissue texture
    eye_r: float
    eye_dx: float
    eye_y: float
    eye_z: float
    intens: dict
    motion: int  # ghost half-width in pixels (0 = none)
    motion_axis: int  # 0: along rows, 1: along columns
    neck_rx: float
    neck_ry: float


def make_head(seed: int, cs, strong_bias: bool | None = None) -> Head:
    """Draw the head of case `cs` (seed = cs.seed); optionally replace its bias fields with strong ones."""
    rng = np.random.default_rng([seed, 0x4EAD])
    h = Head(
        t_csf=float(rng.uniform(0.8, 3.0)), t_inner=float(rng.uniform(0.8, 2.0)), t_dipl=float(rng.uniform(1.5, 6.0)),
        t_outer=float(rng.uniform(0.8, 2.0)), t_muscle=float(rng.uniform(0.0, 14.0)), t_fat=float(rng.uniform(1.5, 8.0)),
        t_skin=float(rng.uniform(1.0, 3.0)),
        thick_noise=rng.normal(0, 1, (8, 8, 8)).astype(np.float32),
        tex_noise=rng.normal(0, 1, (24, 24, 24)).astype(np.float32),
        eye_r=float(rng.uniform(10.5, 12.5)), eye_dx=float(rng.uniform(28, 36)), eye_y=float(rng.uniform(48, 60)),
        eye_z=float(rng.uniform(-46, -36)),
        intens={}, motion=int(rng.choice([0, 0, 1, 2, 3])), motion_axis=int(rng.integers(2)),
        neck_rx=float(rng.uniform(50, 65)), neck_ry=float(rng.uniform(55, 75)),
    )
    for con in HEAD_INTENSITY:
        h.intens[con] = np.array(HEAD_INTENSITY[con]) * rng.uniform(0.7, 1.3, 6)
    if strong_bias is None:
        strong_bias = bool(rng.random() < 0.5)
    if strong_bias:
        for con in cs.bias:
            cs.bias[con] = rng.normal(0, 0.35, 9)
    return h


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def head_fractions(h: Head, v: np.ndarray, inv_aff: np.ndarray):
    """Tissue fractions outside the brain at template voxel coordinates v[N,3] (unpadded template voxels).
    Returns dict name -> [N] float32, summing to <= 1 (the rest is air)."""
    import synth

    dist = load_distance()
    d = synth.trilinear(dist, v + PAD)
    # points beyond the padded grid: far away
    shp = np.array(dist.shape)
    vp = v + PAD
    far = np.any((vp < 0) | (vp >= shp - 1), axis=1)
    d[far] = PAD
    aff = np.linalg.inv(inv_aff)
    q = v @ aff[:3, :3].T + aff[:3, 3]  # template RAS mm
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    mod = 1.0 + 0.35 * np.tanh(synth.trilinear(h.thick_noise, (q + 130.0) / 40.0 + 0.5))
    b1 = h.t_csf * mod
    b2 = b1 + h.t_inner * mod
    b3 = b2 + h.t_dipl * mod
    b4 = b3 + h.t_outer * mod
    lat = np.abs(x)
    w_mus = _sig((lat - 45) / 5) * _sig((35 - z) / 8) * _sig((z + 25) / 8) * _sig((45 - y) / 10) * _sig((y + 70) / 10)
    b5 = b4 + h.t_muscle * w_mus * mod
    b6 = b5 + h.t_fat * mod
    b7 = b6 + h.t_skin * mod
    s = 0.5  # partial-volume width (mm)

    def band(lo, hi):
        return np.clip(_sig((d - lo) / s) - _sig((d - hi) / s), 0, 1)

    outside = _sig(d / s) * (d > 0)
    fr = dict(csf=band(0.0, b1) * outside, bone=band(b1, b2) + band(b3, b4), marrow=band(b2, b3),
              muscle=band(b4, b5), fat=band(b5, b6), skin=band(b6, b7))
    # lower head: face / skull base / upper neck block below the cerebrum, outside the skull
    low = (_sig((-20 - z) / 6) * _sig((1 - np.sqrt((x / h.neck_rx) ** 2 + ((y + 5) / h.neck_ry) ** 2)) * 20)
           * _sig((d - b4) / s))
    tex = synth.trilinear(h.tex_noise, (q + 130.0) / 12.0 + 0.5)
    fat_share = _sig(tex * 2.0 - 0.5)
    # eyes in orbital fat, sinuses (air)
    eye = np.zeros_like(d)
    orbit = np.zeros_like(d)
    for sgn in (-1, 1):
        r = np.sqrt((x - sgn * h.eye_dx) ** 2 + (y - h.eye_y) ** 2 + (z - h.eye_z) ** 2)
        eye = np.maximum(eye, _sig((h.eye_r - r) / s))
        orbit = np.maximum(orbit, _sig((h.eye_r + 7 - r) / 1.0))
    air = np.zeros_like(d)
    for c, rad in (((-30, 35, -58), (11, 15, 14)), ((30, 35, -58), (11, 15, 14)), ((0, 18, -40), (10, 10, 8))):
        e = np.sqrt(((x - c[0]) / rad[0]) ** 2 + ((y - c[1]) / rad[1]) ** 2 + ((z - c[2]) / rad[2]) ** 2)
        air = np.maximum(air, _sig((1 - e) * 8))
    air = air * _sig((d - b1 - 2) / s)
    front = np.sqrt((x / 14) ** 2 + ((y - 70) / 8) ** 2 + ((z - 8) / 10) ** 2)
    fsin = _sig((1 - front) * 8) * fr["marrow"]
    fr["marrow"] = fr["marrow"] - fsin
    low_soft = low * (1 - fr["csf"] - fr["bone"] - fr["marrow"] - fsin)
    low_soft = np.clip(low_soft - (fr["muscle"] + fr["fat"] + fr["skin"]), 0, 1)
    fr["fat"] = fr["fat"] + low_soft * (fat_share * (1 - orbit) + orbit * (1 - eye))
    fr["muscle"] = fr["muscle"] + low_soft * (1 - fat_share) * (1 - orbit)
    fr["vitreous"] = low_soft * orbit * eye
    keep = 1 - air * low
    for k in ("fat", "muscle", "vitreous"):
        fr[k] = fr[k] * keep
    fr["tex"] = tex
    return fr


def head_image(h: Head, con: str, fr: dict, i_csf: float) -> np.ndarray:
    i_marrow, i_fat, i_skin, i_muscle, i_vit, i_bone = h.intens[con]
    t = 1 + 0.08 * fr["tex"]
    return (fr["csf"] * i_csf + fr["bone"] * i_bone + fr["marrow"] * i_marrow * t + fr["fat"] * i_fat * t
            + fr["skin"] * i_skin + fr["muscle"] * i_muscle * t + fr["vitreous"] * i_vit)


def motion_blur(img2d: np.ndarray, h: Head) -> np.ndarray:
    if h.motion <= 0:
        return img2d
    acc = np.zeros_like(img2d)
    for s in range(-h.motion, h.motion + 1):
        acc += np.roll(img2d, s, axis=h.motion_axis)
    return acc / (2 * h.motion + 1)


ORIENTATIONS = ("axial", "sagittal", "coronal", "oblique")


def orientation_matrix(kind: str, rng) -> np.ndarray:
    """Columns: row_dir, col_dir, normal (patient LPS), as a scanner would write them."""
    import synth

    if kind == "axial":
        base = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float).T
        jit = np.deg2rad(rng.uniform(-3, 3, 3))
    elif kind == "sagittal":
        base = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T
        jit = np.deg2rad(rng.uniform(-3, 3, 3))
    elif kind == "coronal":
        base = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float).T
        jit = np.deg2rad(rng.uniform(-3, 3, 3))
    elif kind == "oblique":
        base = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float).T
        jit = np.deg2rad([rng.choice([-1, 1]) * rng.uniform(12, 25), rng.uniform(-10, 10), rng.uniform(-6, 6)])
    else:
        raise ValueError(kind)
    return synth.rotation(*jit) @ base
