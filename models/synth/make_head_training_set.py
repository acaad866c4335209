#!/usr/bin/env python3
"""Tumour-model training slices as the pipeline feeds them with its brain-extraction stage (issue 14): heads with
skull, scalp and neck, strong or weak bias fields and motion blur, stripped by a brain mask, then normalised.
One .npz per case, the format of make_training_set.py (train.py reads both):
  x float16 [N, 4, 128, 128]  (T1, T1CE, T2, FLAIR stripped, then normalised over the whole volume)
  y uint8   [N, 128, 128]     (labels; 0 outside the mask used to strip, as the segmenter clears them there)
Kept slices: every slice with tumour, plus each other slice with brain in it with probability 0.3.

Per case (seed): a head with probability --head-prob (models/synth/head.py: its bias field strong in half of the
cases, motion blur 0-3 px), else a skull-stripped brain (strong bias in half of them, no motion); an axial,
sagittal, coronal or oblique stack (equally likely) of 1-5 mm slices over 170 mm, centred on the brain +-8 mm,
rendered directly on the model grid (128 x 128 pixels of 2 mm). The mask that strips it is, with probability
--model-mask-prob, what the brain model (--brain-model, its manifest's preprocessing) finds on the FLAIR channel,
i.e. what the segmenter's stage would feed the tumour model; otherwise the ground-truth brain mask eroded or
dilated by 0-2 pixels in-plane (mask edge errors of either sign, whatever brain model ships).

With --mask-out DIR, also 24 random slices of every head case in make_brainmask_set.py's format (unstripped
contrasts normalised over the head, ground-truth brain mask): brain-mask training data for free.

Seeds: training 100000..199999 (this set uses 300000.. so it never overlaps the skull-stripped set's seeds or the
brain-mask set's 200000..); held-out evaluation 900000.. and the sweep's 950000.. .
Usage: python models/synth/make_head_training_set.py --first 300000 --count 200 --out /tmp/head-train \
           --brain-model models/brain-mask-synth [--mask-out /tmp/brainmask-extra]
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
import preprocess  # noqa: E402
import synth  # noqa: E402


def morph2d(mask, px):
    """Erode (px < 0) or dilate (px > 0) every slice of mask[K, J, I] by |px| pixels (4-neighbour steps)."""
    m = mask.astype(bool)
    for _ in range(abs(px)):
        p = np.pad(m, ((0, 0), (1, 1), (1, 1)), constant_values=px < 0)
        nb = [p[:, 1:-1, 1:-1], p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]
        m = np.logical_or.reduce(nb) if px > 0 else np.logical_and.reduce(nb)
    return m.astype(np.uint8)


def make_case(seed, brain_model, head_prob, model_mask_prob):
    rng = np.random.default_rng([seed, 0x7E4D])
    has_head = bool(rng.random() < head_prob)
    strong = bool(rng.random() < 0.5)
    cs = synth.make_case(seed, head=has_head, strong_bias=strong)
    kind = head.ORIENTATIONS[int(rng.integers(4))]
    th = float(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]))
    R = head.orientation_matrix(kind, rng)
    centre = cs.centre_subject + rng.uniform(-8, 8, 3)
    n = int(np.ceil(170.0 / th))
    geom = synth.Geometry.centred(R, centre, 128, 128, 2.0, 2.0, n, th, th)
    imgs, lab, brain = synth.render(cs, geom, with_brain=True)
    if rng.random() < model_mask_prob:
        mask, _ = brain_model.segment({brain_model.channels[0]: imgs["FLAIR"]}, 2.0, 2.0)
        how = "model"
    else:
        px = int(rng.integers(-2, 3))
        mask = morph2d(brain, px)
        how = f"gt{px:+d}"
    raw = np.stack([imgs[c] for c in synth.CONTRASTS])
    x = preprocess.normalise(np.where(mask[None] > 0, raw, np.float32(0)))
    lab = np.where(mask > 0, lab, 0).astype(np.uint8)
    has_t = (lab > 0).any(axis=(1, 2))
    has_b = (mask > 0).any(axis=(1, 2))
    keep = has_t | (has_b & (rng.random(len(has_t)) < 0.3))
    extra = None
    if has_head:
        ks = np.sort(rng.choice(geom.slices, min(24, geom.slices), replace=False))
        extra = (preprocess.normalise(raw)[:, ks].transpose(1, 0, 2, 3), brain[ks])
    info = dict(head=has_head, strong=strong, kind=kind, th=th, mask=how,
                motion=cs.head.motion if has_head else 0, mask_dice=round(ev.dice(mask, brain, (1,)), 4))
    return x[:, keep].transpose(1, 0, 2, 3), lab[keep], extra, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=300000)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--step", type=int, default=1, help="seed stride (run several workers with offsets)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mask-out", default=None)
    ap.add_argument("--brain-model", default=str(HERE.parent / "brain-mask-synth"))
    ap.add_argument("--head-prob", type=float, default=0.75)
    ap.add_argument("--model-mask-prob", type=float, default=0.7)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.mask_out:
        Path(a.mask_out).mkdir(parents=True, exist_ok=True)
    head.load_distance()
    brain_model = ev.Model(a.brain_model, threads=1, brain=False)
    for seed in range(a.first, a.first + a.count * a.step, a.step):
        dst = out / f"case_{seed}.npz"
        if dst.exists():
            continue
        t = time.time()
        x, y, extra, info = make_case(seed, brain_model, a.head_prob, a.model_mask_prob)
        tmp = out / f".tmp_{seed}.npz"
        np.savez(tmp, x=x.astype(np.float16), y=y)
        tmp.rename(dst)
        if extra is not None and a.mask_out:
            tmp = Path(a.mask_out) / f".tmp_{seed}.npz"
            np.savez(tmp, x=extra[0].astype(np.float16), y=extra[1])
            tmp.rename(Path(a.mask_out) / f"case_{seed}.npz")
        print(seed, info, len(y), np.bincount(y.ravel(), minlength=4)[1:], f"{time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
