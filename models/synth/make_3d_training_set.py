#!/usr/bin/env python3
"""Training cases for a patch3d model (models/train3d.py), as the segmenter feeds them with its brain-extraction
stage: a study-like acquisition (axial, sagittal, coronal or oblique stack; in-plane pixels 1.6-2 mm, as the
canonical grid is 2 mm; slices 1-5 mm over 150-180 mm), a head (skull, scalp, neck; --head-prob) or a
skull-stripped brain, strong or weak bias; the brain mask that strips it is, with probability --model-mask-prob,
what the brain model (--brain-model, on FLAIR) finds on the acquisition grid, otherwise the ground-truth mask
eroded or dilated by 0-2 voxels; voxels outside the mask get 0; then the canonical grid of models/preprocess3d.py
(RAS, --spacing mm), the crop to the nonzero box and the per-channel nonzero z-score. Ground truth is rendered
exactly at the canonical voxel centres and cleared outside the (resampled) mask, as the segmenter clears labels
outside the brain.

One .npz per case: x float16 [4, D0, D1, D2] (T1c, T1, T2, FLAIR: MONAI's order), y uint8 [D0, D1, D2] (labels
0/1/2/3: background, necrotic core, oedema, enhancing).
Seeds: 400000.. (the 2D sets use 100000-399999; held-out evaluation 900000..).
Usage: python models/synth/make_3d_training_set.py --first 400000 --count 150 --out /tmp/wt15-data/train
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import eval as ev  # noqa: E402
import head  # noqa: E402
import preprocess3d as p3  # noqa: E402
import synth  # noqa: E402

CHANNELS = ("T1CE", "T1", "T2", "FLAIR")  # MONAI brats_mri_segmentation: T1c, T1, T2, FLAIR


def morph3d(mask, px):
    """Erode (px < 0) or dilate (px > 0) mask[K, J, I] by |px| voxels (6-neighbour steps)."""
    m = mask.astype(bool)
    for _ in range(abs(px)):
        p = np.pad(m, 1, constant_values=px < 0)
        nb = [p[1:-1, 1:-1, 1:-1], p[:-2, 1:-1, 1:-1], p[2:, 1:-1, 1:-1], p[1:-1, :-2, 1:-1], p[1:-1, 2:, 1:-1],
              p[1:-1, 1:-1, :-2], p[1:-1, 1:-1, 2:]]
        m = np.logical_or.reduce(nb) if px > 0 else np.logical_and.reduce(nb)
    return m.astype(np.uint8)


def acquisition(cs, rng):
    kind = head.ORIENTATIONS[int(rng.integers(4))]
    th = float(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]))
    px = float(rng.uniform(1.6, 2.0))
    fov = float(rng.uniform(220, 250))
    size = int(round(fov / px))
    coverage = float(rng.uniform(150, 180))
    R = head.orientation_matrix(kind, rng)
    centre = cs.centre_subject + rng.uniform(-8, 8, 3)
    n = int(np.ceil(coverage / th))
    return kind, synth.Geometry.centred(R, centre, size, size, px, px, n, th, th)


def make_case(seed, brain_model, head_prob, model_mask_prob, spacing):
    rng = np.random.default_rng([seed, 0x3D3D])
    has_head = bool(rng.random() < head_prob)
    strong = bool(rng.random() < 0.5)
    cs = synth.make_case(seed, head=has_head, strong_bias=strong)
    kind, geom = acquisition(cs, rng)
    imgs, _, brain = synth.render(cs, geom, with_brain=True)
    if rng.random() < model_mask_prob:
        mask, _ = brain_model.segment({brain_model.channels[0]: imgs["FLAIR"]}, geom.row_spacing, geom.col_spacing)
        how = "model"
    else:
        px = int(rng.integers(-2, 3))
        mask = morph3d(brain, px)
        how = f"gt{px:+d}"
    axes = p3.canonical_axes(geom, "RAS", (spacing,) * 3)
    ch = [p3.resample(np.where(mask > 0, imgs[c], np.float32(0)), axes) for c in CHANNELS]
    mask_c = p3.resample(mask.astype(np.float32), axes) >= 0.5
    cgeom = p3.canonical_geometry(geom, axes)
    _, lab_c = synth.render(cs, cgeom, with_images=False)
    lab_c = np.where(mask_c, p3.to_canonical_order(lab_c, axes), 0).astype(np.uint8)
    lo, hi = p3.nonzero_box(ch)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    x = p3.zscore_nonzero(np.stack([c[sl] for c in ch]))
    y = lab_c[sl]
    info = dict(head=has_head, strong=strong, kind=kind, th=geom.slice_thickness, px=round(geom.row_spacing, 2),
                ref=(geom.slices, geom.rows, geom.cols), mask=how, box=tuple(int(b - a) for a, b in zip(lo, hi)),
                mask_dice=round(ev.dice(mask, brain, (1,)), 4))
    return x, y, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=400000)
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--step", type=int, default=1, help="seed stride (run several workers with offsets)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--brain-model", default=str(HERE.parent / "brain-mask-synth"))
    ap.add_argument("--head-prob", type=float, default=0.6)
    ap.add_argument("--model-mask-prob", type=float, default=0.6)
    ap.add_argument("--spacing", type=float, default=2.0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    head.load_distance()
    brain_model = ev.Model(a.brain_model, threads=1, brain=False)
    for seed in range(a.first, a.first + a.count * a.step, a.step):
        dst = out / f"case_{seed}.npz"
        if dst.exists():
            continue
        t = time.time()
        x, y, info = make_case(seed, brain_model, a.head_prob, a.model_mask_prob, a.spacing)
        tmp = out / f".tmp_{seed}.npz"
        np.savez(tmp, x=x.astype(np.float16), y=y)
        tmp.rename(dst)
        print(seed, info, np.bincount(y.ravel(), minlength=4)[1:], f"{time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
