#!/usr/bin/env python3
"""Brain-mask Dice of a brain-extraction model (and optionally the previous version) on held-out synthetic studies,
per contrast: the model run on T1, T1CE, T2 and FLAIR in turn, through onnxruntime with the manifest's
preprocessing (models/eval.py), against the ground-truth brain mask on the reference grid.

    .venv-train/bin/python models/eval_brainmask.py --cache /tmp/sweep-cache \
        --model models/brats-synth-unet2d --before-model /tmp/old/brats-synth-unet2d \
        --json models/brain-mask-synth/eval.json

The cases are the robustness sweep's rendered studies (models/sweep.py --cache DIR [--render-only]): every
`sweep_<seed>_<skull>_<orientation>_<thickness>_<bias>_<size>.npz` in the cache (128 x 128 over 240 mm, 170 mm
coverage). `--model` is a tumour model folder whose [brain_extraction] names the brain model (as the segmenter reads
it); `--before-model` another such folder, e.g. a copy with the previous brain model.
"""
import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import eval as ev  # noqa: E402
import synth  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--model", default=str(HERE / "brats-synth-unet2d"))
    ap.add_argument("--before-model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--motion", default="drawn",
                    help="which renders: 'drawn' (each head's own motion, the card's set), N (sweep.py --motion N), 'all'")
    a = ap.parse_args()
    models = {"after": ev.Model(a.model, threads=a.threads)}
    if a.before_model:
        models["before"] = ev.Model(a.before_model, threads=a.threads)
    rows = []
    for f in sorted(glob.glob(str(Path(a.cache) / "sweep_*.npz"))):
        _, seed, skull, orient, th, bias, size, *forced = Path(f).stem.split("_")
        motion = forced[0][1:] if forced else "drawn"  # sweep.py --motion N renders end in _mN
        if a.motion not in ("all", motion):
            continue
        z = np.load(f)
        vols = {c: z[c] for c in synth.CONTRASTS}
        gt = z["brain"]
        sp = 240.0 / int(size)
        r = dict(seed=int(seed), skull=skull, orient=orient, thickness=float(th), bias=bias, motion=motion,
                 gt_brain_ml=round(float(gt.sum()) * sp * sp * float(th) / 1000, 1))
        for tag, m in models.items():
            r[tag] = {c: ev.dice(m.brain_mask(vols, sp, sp, channels=[c])[0], gt, (1,)) for c in synth.CONTRASTS}
        rows.append(r)
        print(seed, skull, orient, th, bias, " ".join(f"{t}:{c}={v:.4f}" for t in models for c, v in r[t].items()),
              flush=True)
    out = dict(model=models["after"].brain.m["model"]["name"], version=models["after"].brain.m["model"]["version"],
               before=(models["before"].brain.m["model"]["version"] if "before" in models else None),
               source="models/eval_brainmask.py", cases=rows)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
