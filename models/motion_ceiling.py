#!/usr/bin/env python3
"""How much whole-tumour Dice the heads' motion ghosting removes before any model sees them (issue 14).

    python models/motion_ceiling.py --sweep models/brats-synth-unet2d/sweep.json \
        --motion0 models/brats-synth-unet2d/sweep-motion0.json --cache /tmp/sweep-cache \
        [--json models/brats-synth-unet2d/motion-ceiling.json]

The generator's motion (models/synth/head.py `motion_blur`) averages every slice over 2m+1 pixels along one in-plane
axis (m = 1-3 px, up to 13 mm on the sweep's 1.875 mm grid); the truth stays sharp. For every head of a sweep run
"as drawn" (models/sweep.py --motion drawn) with m > 0, this applies the same average to the true whole-tumour mask
and keeps what is >= 0.5: the mask an ideal edge finder would draw from the blurred image if it placed every edge at
its half-height, with no knowledge of the shape. Its Dice against the sharp truth ("blurred truth") is what that
finder loses to the blur alone. It is not a bound: a model with a strong enough prior of tumour shapes can put back
thin structures the average smeared out. Per orientation it prints the model's WT as drawn, the same heads' WT
with their motion set to 0 (--motion0, a sweep of the same seeds with --motion 0), the blurred truth, and
motion0 x blurred truth: what the model would score if the blur cost it exactly what it costs the edge finder.
"""
import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import eval as ev  # noqa: E402
import head  # noqa: E402
import sweep  # noqa: E402
import synth  # noqa: E402


def blurred_truth(r, cache, size):
    """Dice of the blurred, re-thresholded true WT mask of sweep case `r` against the sharp one (1.0 without motion)."""
    if r["motion"] == 0:  # nothing to render, but the case must agree with the sweep
        cs, gt = synth.make_case(r["seed"], head=True, strong_bias=r["bias"] == "strong"), None
    else:
        cs, _, (_, gt, _) = sweep.render_case(r["seed"], "on", r["orient"], r["thickness"], r["bias"], "drawn", size,
                                              cache)
    if cs.head.motion != r["motion"]:
        raise SystemExit(f"seed {r['seed']}: the sweep says motion {r['motion']}, the generator draws {cs.head.motion}")
    if gt is None:
        return 1.0
    wt = (gt > 0).astype(np.float32)
    blurred = np.stack([head.motion_blur(s, cs.head) for s in wt]) >= 0.5
    return ev.dice(blurred.astype(np.uint8), gt > 0, (1,))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", required=True, help="sweep JSON of heads as drawn")
    ap.add_argument("--motion0", required=True, help="sweep JSON of the same seeds with --motion 0")
    ap.add_argument("--cache", default=None, help="the sweeps' --cache (else every moved head is rendered again)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    drawn = json.loads(Path(a.sweep).read_text())
    still = {r["seed"]: r for r in json.loads(Path(a.motion0).read_text())["cases"] if r["skull"] == "on"}
    rows = []
    for r in drawn["cases"]:
        if r["skull"] != "on":
            continue
        if r["seed"] not in still:
            raise SystemExit(f"seed {r['seed']} is not in {a.motion0}")
        bt = blurred_truth(r, a.cache, drawn["size"])
        rows.append(dict(seed=r["seed"], orient=r["orient"], thickness=r["thickness"], bias=r["bias"],
                         motion=r["motion"], wt_drawn=r["after"]["WT"], wt_motion0=still[r["seed"]]["after"]["WT"],
                         blurred_truth=bt, product=still[r["seed"]]["after"]["WT"] * bt))
    groups = collections.defaultdict(list)
    for r in rows:
        groups[f"orientation {r['orient']}"].append(r)
        groups[f"motion {r['motion']} px"].append(r)
        groups["all"].append(r)
    keys = ("wt_drawn", "wt_motion0", "blurred_truth", "product")
    summary = {g: dict(n=len(v), **{k: float(np.mean([r[k] for r in v])) for k in keys},
                       blurred_truth_min=float(np.min([r["blurred_truth"] for r in v])))
               for g, v in sorted(groups.items())}
    print(f"{drawn['model']} {drawn['version']}, {len(rows)} heads")
    print("| heads | n | WT as drawn | WT, motion 0 | blurred truth (min) | motion 0 x blurred truth |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g, s in summary.items():
        print(f"| {g} | {s['n']} | {s['wt_drawn']:.3f} | {s['wt_motion0']:.3f} | {s['blurred_truth']:.3f} "
              f"({s['blurred_truth_min']:.3f}) | {s['product']:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(model=drawn["model"], version=drawn["version"], cases=rows,
                                                groups=summary), indent=1) + "\n")


if __name__ == "__main__":
    main()
