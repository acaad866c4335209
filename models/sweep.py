#!/usr/bin/env python3
"""Robustness sweep of a tumour model with and without its brain-extraction stage (issue 14).

    .venv-train/bin/python models/sweep.py --model models/brats-synth-unet2d --seeds 2 \
        --json models/brats-synth-unet2d/sweep.json --markdown models/brats-synth-unet2d/sweep.md

Conditions: skull on/off x orientation axial/sagittal/coronal/oblique x slice thickness 1/3/5 mm x bias weak/strong
(x with --motion, the heads' in-plane motion ghosting: "drawn", the default, is what each case draws (0-3 px, 0 in
two cases of five); an integer forces that half-width in pixels; stripped brains never move), `--seeds` held-out
cases per condition (seeds 950000.., a distinct seed per case; training used 100000..299999).
Every case is rendered once on a study-like grid (`--size` px over a 240 mm field of view, 170 mm coverage,
centred on the brain; heads from models/synth/head.py) and segmented twice through onnxruntime with the
manifest's preprocessing (models/preprocess.py):
  before: the tumour model alone (what brats-synth-unet2d 0.2.0 did: no brain extraction), or with
          --before-model DIR, that model folder with its own [brain_extraction] stage (e.g. a copy of the previous
          version with its brain model, to compare two versions of the pipeline on the same cases);
  after:  with the manifest's [brain_extraction] stage.
Reported per condition group: mean and min Dice WT/TC/ET before and after, and the brain-mask Dice of the stage
(the channel the manifest names) plus, with --all-contrasts, of the brain model run on each contrast.
"""
import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import eval as ev  # noqa: E402
import head  # noqa: E402
import synth  # noqa: E402

THICK = (1.0, 3.0, 5.0)


def geometry(cs, rng, kind, th, size, fov=240.0, coverage=170.0):
    R = head.orientation_matrix(kind, rng)
    n = int(np.ceil(coverage / th))
    centre = cs.centre_subject + rng.uniform(-5, 5, 3)
    px = fov / size
    return synth.Geometry.centred(R, centre, size, size, px, px, n, th, th)


def render_case(seed, skull, kind, th, bias, motion, size, cache_dir):
    """One sweep case: (synth.Case, its Geometry, (images, labels, brain mask)), rendered or read from cache_dir
    (None: no cache). motion: "drawn" (the head's own draw) or a half-width in pixels forced on a head."""
    cs = synth.make_case(seed, head=skull == "on", strong_bias=bias == "strong")
    forced = "" if motion == "drawn" or cs.head is None else f"_m{int(motion)}"
    if forced:
        cs.head.motion = int(motion)
    geom = geometry(cs, np.random.default_rng([seed, 5]), kind, th, size)
    cache = Path(cache_dir) / f"sweep_{seed}_{skull}_{kind}_{th:g}_{bias}_{size}{forced}.npz" if cache_dir else None
    return cs, geom, ev.cached_render(cache, cs, geom)


def summarise(rows, key):
    out = {}
    for k in ("WT", "TC", "ET"):
        v = [r[key][k] for r in rows]
        out[k] = dict(mean=float(np.mean(v)), min=float(np.min(v)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "brats-synth-unet2d"))
    ap.add_argument("--seeds", type=int, default=1, help="cases per condition")
    ap.add_argument("--first", type=int, default=950000)
    ap.add_argument("--size", type=int, default=128, help="in-plane matrix of the rendered studies (240 mm FOV)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before-model", default=None,
                    help="'before' = this model folder with its own stage (default: --model without its stage)")
    ap.add_argument("--all-contrasts", action="store_true", help="brain Dice of the brain model on every contrast")
    ap.add_argument("--skull", default="on,off")
    ap.add_argument("--orient", default=",".join(head.ORIENTATIONS))
    ap.add_argument("--thick", default="1,3,5")
    ap.add_argument("--bias", default="weak,strong")
    ap.add_argument("--motion", default="drawn",
                    help="heads' motion ghosting half-width(s) in pixels, or 'drawn' (each case's own draw)")
    ap.add_argument("--cache", default=None, help="keep rendered cases here (rendering dominates the run time)")
    ap.add_argument("--render-only", action="store_true", help="fill --cache and stop")
    ap.add_argument("--combine", nargs="+", default=None,
                    help="merge the cases of these sweep JSON files (reduced grids run separately) and report")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args()
    if a.combine:
        parts = [json.loads(Path(f).read_text()) for f in a.combine]
        res = dict(parts[0], cases=[r for p in parts for r in p["cases"]],
                   conditions=sum(p["conditions"] for p in parts), minutes=sum(p["minutes"] for p in parts),
                   combined_from=[str(f) for f in a.combine])
        report(res, a)
        return
    if not a.render_only:
        with_stage = ev.Model(a.model, a.threads, brain=True)
        assert with_stage.brain is not None, "the manifest has no [brain_extraction]"
        alone = ev.Model(a.before_model or a.model, a.threads, brain=a.before_model is not None)
    conds = list(itertools.product(a.skull.split(","), a.orient.split(","), [float(t) for t in a.thick.split(",")],
                                   a.bias.split(","), a.motion.split(",")))
    rows = []
    seed = a.first
    t_all = time.time()
    for skull, kind, th, bias, motion in conds:
        for _ in range(a.seeds):
            t0 = time.time()
            cs, geom, (imgs, gt, gt_brain) = render_case(seed, skull, kind, th, bias, motion, a.size, a.cache)
            if a.render_only:
                print(f"{seed} rendered {time.time() - t0:.1f}s", flush=True)
                seed += 1
                continue
            rs, cs_ = geom.row_spacing, geom.col_spacing
            pb, _ = alone.segment(imgs, rs, cs_)
            pa, _ = with_stage.segment(imgs, rs, cs_)
            mask, bdt = with_stage.last_brain
            r = dict(seed=seed, skull=skull, orient=kind, thickness=th, bias=bias,
                     motion=cs.head.motion if cs.head is not None else 0, slices=geom.slices,
                     before={k: ev.dice(pb, gt, v) for k, v in ev.REGIONS.items()},
                     after={k: ev.dice(pa, gt, v) for k, v in ev.REGIONS.items()},
                     brain_dice=ev.dice(mask, gt_brain, (1,)), brain_s=round(bdt, 3),
                     brain_ml=round(float(mask.sum() * rs * cs_ * th / 1000), 1),
                     gt_brain_ml=round(float(gt_brain.sum() * rs * cs_ * th / 1000), 1))
            if alone.brain is not None:
                r["brain_dice_before"] = ev.dice(alone.last_brain[0], gt_brain, (1,))
                r["brain_s_before"] = round(alone.last_brain[1], 3)
            if a.all_contrasts:
                r["brain_dice_by_contrast"] = {}
                for con in synth.CONTRASTS:
                    m, _ = with_stage.brain_mask(imgs, rs, cs_, channels=[con])
                    r["brain_dice_by_contrast"][con] = ev.dice(m, gt_brain, (1,))
            rows.append(r)
            print(f"{seed} skull {skull:3s} {kind:8s} {th:.0f}mm {bias:6s} motion {r['motion']}: before WT {r['before']['WT']:.3f} "
                  f"TC {r['before']['TC']:.3f} ET {r['before']['ET']:.3f} | after WT {r['after']['WT']:.3f} "
                  f"TC {r['after']['TC']:.3f} ET {r['after']['ET']:.3f} | brain {r['brain_dice']:.4f} "
                  f"({r['brain_ml']} vs {r['gt_brain_ml']} mL) {time.time() - t0:.1f}s", flush=True)
            seed += 1
    if a.render_only:
        return
    res = dict(model=with_stage.m["model"]["name"], version=with_stage.m["model"]["version"],
               brain_model=with_stage.brain.m["model"]["name"], brain_version=with_stage.brain.m["model"]["version"],
               before=(f"{alone.m['model']['name']} {alone.m['model']['version']}"
                       + (" with its stage" if a.before_model else " without the stage")),
               size=a.size, seeds_per_condition=a.seeds, conditions=len(conds), cases=rows,
               minutes=round((time.time() - t_all) / 60, 1))
    report(res, a)


def report(res, a):
    """Groups, markdown table, per-contrast brain Dice; writes --json / --markdown."""
    rows = res["cases"]
    groups = {}
    for name, fn in [("skull", lambda r: r["skull"]), ("skull x orientation", lambda r: f"{r['skull']} {r['orient']}"),
                     ("skull x thickness", lambda r: f"{r['skull']} {r['thickness']:.0f} mm"),
                     ("skull x bias", lambda r: f"{r['skull']} {r['bias']}"),
                     ("skull x motion", lambda r: f"{r['skull']} motion {r.get('motion', '?')} px")]:
        g = {}
        for r in rows:
            g.setdefault(fn(r), []).append(r)
        groups[name] = {k: dict(n=len(v), before=summarise(v, "before"), after=summarise(v, "after"),
                                brain_dice=dict(mean=float(np.mean([x["brain_dice"] for x in v])),
                                                min=float(np.min([x["brain_dice"] for x in v]))))
                        for k, v in g.items()}
    res["groups"] = groups
    lines = ["| condition | n | before WT mean / min | before TC | before ET | after WT mean / min | after TC | after ET "
             "| brain Dice mean / min |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for gname, g in groups.items():
        for k, v in g.items():
            f = lambda s, reg: f"{v[s][reg]['mean']:.3f} / {v[s][reg]['min']:.3f}"  # noqa: E731
            lines.append(f"| {k} | {v['n']} | {f('before', 'WT')} | {f('before', 'TC')} | {f('before', 'ET')} | "
                         f"{f('after', 'WT')} | {f('after', 'TC')} | {f('after', 'ET')} | "
                         f"{v['brain_dice']['mean']:.4f} / {v['brain_dice']['min']:.4f} |")
    if all("brain_dice_by_contrast" in r for r in rows):
        lines.append("")
        lines.append("| brain model fed | n | brain Dice mean | min |")
        lines.append("| --- | --- | --- | --- |")
        for con in synth.CONTRASTS:
            v = [r["brain_dice_by_contrast"][con] for r in rows]
            lines.append(f"| {con} | {len(v)} | {np.mean(v):.4f} | {np.min(v):.4f} |")
    table = "\n".join(lines)
    print(table)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
