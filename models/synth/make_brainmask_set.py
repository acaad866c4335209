#!/usr/bin/env python3
"""Training slices for the brain-extraction model (models/brain-mask-synth), one .npz per case:
  x float16 [N, 4, 128, 128]  (T1, T1CE, T2, FLAIR on the model grid, each normalised as models/preprocess.py does)
  y uint8   [N, 128, 128]     (ground-truth brain mask: the template brain, CSF inside it included)

Cases are synthetic heads (models/synth/head.py) with domain randomisation of what the model must ignore:
orientation (axial / sagittal / coronal / oblique, equally likely), slice thickness 1-6 mm, coverage 110-200 mm
shifted +-30 mm along the normal (cuts the vertex or the neck), in-plane shift +-15 mm, weak or strong bias,
motion blur, and in 30 % of cases an in-plane field of view of 170-256 mm (outside it: 0, as the segmenter's
resampling gives). 20 % of cases are skull-stripped (no head), so that the model learns to leave a stripped brain
intact. Only `--slices` random slices of each stack are rendered (rendering dominates); the normalisation
statistics are taken over those slices, an unbiased sample of the stack.

Seeds: training 200000..299999 (the tumour training set uses 100000..199999, the head tumour set
make_head_training_set.py 300000..); held-out brain-mask evaluation (models/sweep.py) uses 950000.. .
`--head-prob 0` renders skull-stripped cases only (to top up a set with them).
Usage: python models/synth/make_brainmask_set.py --first 200000 --count 400 --out /tmp/brainmask-train
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import head  # noqa: E402
import preprocess  # noqa: E402
import synth  # noqa: E402


def random_head_geometry(rng, cs, kind=None, thickness=None, rows=128, cols=128, pixel=2.0):
    """A random stack over a head: orientation, thickness, coverage and centre (may cut vertex or neck)."""
    if kind is None:
        kind = head.ORIENTATIONS[int(rng.integers(4))]
    if thickness is None:
        thickness = float(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    R = head.orientation_matrix(kind, rng)
    coverage = float(rng.uniform(110, 200))
    centre = cs.centre_subject + R @ np.r_[rng.uniform(-15, 15, 2), rng.uniform(-30, 30)]
    n = max(8, int(np.ceil(coverage / thickness)))
    return synth.Geometry.centred(R, centre, rows, cols, pixel, pixel, n, thickness, thickness), kind


def make_case_slices(seed, nslices=24, head_prob=0.8):
    rng = np.random.default_rng([seed, 0xB7A1])
    has_head = bool(rng.random() < head_prob)
    cs = synth.make_case(seed, head=has_head, strong_bias=None if has_head else bool(rng.random() < 0.5))
    geom, kind = random_head_geometry(rng, cs)
    ks = np.sort(rng.choice(geom.slices, min(nslices, geom.slices), replace=False))
    imgs, _, brain = synth.render(cs, geom, with_brain=True, slices=ks)
    x = np.stack([imgs[c] for c in synth.CONTRASTS])
    if rng.random() < 0.3:  # smaller in-plane field of view
        fr, fc = rng.uniform(85, 128, 2)
        jj, ii = np.meshgrid(np.arange(128) - 63.5, np.arange(128) - 63.5, indexing="ij")
        out = (np.abs(jj) > fr / 2) | (np.abs(ii) > fc / 2)
        x[..., out] = 0
        brain[:, out] = 0
    x = preprocess.normalise(x)
    return x.transpose(1, 0, 2, 3), brain, dict(head=has_head, kind=kind, th=geom.slice_thickness)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=200000)
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--head-prob", type=float, default=0.8, help="fraction of head cases (the rest skull-stripped)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    head.load_distance()
    for seed in range(a.first, a.first + a.count * a.step, a.step):
        dst = out / f"case_{seed}.npz"
        if dst.exists():
            continue
        t = time.time()
        x, y, info = make_case_slices(seed, a.slices, a.head_prob)
        tmp = out / f".tmp_{seed}.npz"
        np.savez(tmp, x=x.astype(np.float16), y=y)
        tmp.rename(dst)
        print(seed, info, len(y), f"{time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
