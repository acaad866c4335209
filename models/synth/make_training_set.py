#!/usr/bin/env python3
"""Render synthetic cases directly on the model grid (128x128 slices at 2 mm, random axial/oblique orientation,
random slice thickness 1-5 mm) and store normalised training slices, one .npz per case:
  x float16 [N, 4, 128, 128]  (T1, T1CE, T2, FLAIR after models/preprocess.py normalise over the whole volume)
  y uint8   [N, 128, 128]     (labels 0 background, 1 necrotic core, 2 oedema, 3 enhancing)
Kept slices: every slice with tumour, plus each other slice with brain in it with probability 0.3.

Seeds: training uses 100000..199999; evaluation (models/eval.py) uses 900000..; demo studies 7 and 42.
Usage: python models/synth/make_training_set.py --first 100000 --count 300 --out /tmp/brats-synth-train
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import synth  # noqa: E402
import preprocess  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=100000)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--step", type=int, default=1, help="seed stride (run several workers with offsets)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(a.first, a.first + a.count * a.step, a.step):
        dst = out / f"case_{seed}.npz"
        if dst.exists():
            continue
        t = time.time()
        cs = synth.make_case(seed)
        rng = np.random.default_rng([seed, 7])
        geom = synth.random_geometry(rng, cs)
        imgs, lab = synth.render(cs, geom)
        x = preprocess.normalise(np.stack([imgs[c] for c in synth.CONTRASTS]))
        has_t = (lab > 0).any(axis=(1, 2))
        has_b = (imgs["T1"] > 0.2 * imgs["T1"].max()).any(axis=(1, 2))
        keep = has_t | (has_b & (rng.random(len(has_t)) < 0.3))
        tmp = out / f".tmp_{seed}.npz"
        np.savez(tmp, x=x[:, keep].transpose(1, 0, 2, 3).astype(np.float16), y=lab[keep])
        tmp.rename(dst)
        print(seed, geom.slices, geom.slice_thickness, int(keep.sum()), np.bincount(lab.ravel(), minlength=4)[1:],
              f"{time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
