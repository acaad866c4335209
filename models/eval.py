#!/usr/bin/env python3
"""Evaluate a slice2d model (manifest + ONNX) with onnxruntime on held-out synthetic cases, using exactly the
preprocessing/postprocessing the manifest describes (models/preprocess.py).

    .venv-train/bin/python models/eval.py --model models/brats-synth-unet2d --first 900000 --cases 20
    .venv-train/bin/python models/eval.py --model models/brats-synth-unet2d --study testdata/studies/<name>

Held-out cases: seeds 900000.. (training used 100000..199999). Each case is rendered on a study-like grid
(random in-plane size 192-256 over a 220-250 mm field of view, slice thickness 2-5 mm, half of them oblique),
i.e. the same pixel values models/synth/make_study.py writes into DICOM, then preprocessed onto the model grid,
segmented slice by slice, resampled back, and scored against the ground truth on that grid.
With --study, a DICOM study written by make_study.py is read from disk (series matched by the manifest's
Series Description regexes) and scored against its truth/labels_ref.u8.

Dice: WT = labels {1,2,3}, TC = {1,3}, ET = {3}; per case 2|P&G|/(|P|+|G|), 1.0 when both are empty.
"""
import argparse
import itertools
import json
import re
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import preprocess  # noqa: E402

REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def dice(pred, gt, labels):
    p = np.isin(pred, labels)
    g = np.isin(gt, labels)
    den = p.sum() + g.sum()
    return 1.0 if den == 0 else float(2 * (p & g).sum() / den)


class Model:
    def __init__(self, folder, threads=2, brain=True):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.m = tomllib.loads((self.folder / "model.toml").read_text())
        # [brain_extraction]: the brain-mask model runs first (brain=False: the model alone, as before 0.3.0)
        self.be = self.m.get("brain_extraction") if brain else None
        self.brain = Model(self.folder / self.be["model"], threads, brain=False) if self.be else None
        self.last_brain = None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(self.folder / self.m["model"]["onnx"]), so,
                                         providers=["CPUExecutionProvider"])
        g = self.m["geometry"]
        self.size = g["size"][0]
        self.spacing = g["spacing_mm"][0]
        assert g["size"][0] == g["size"][1] and g["spacing_mm"][0] == g["spacing_mm"][1]
        self.channels = [i["name"] for i in sorted(self.m["inputs"], key=lambda i: i["channel"])]
        # geometry.mirror_axes (in-plane: 0 rows, 1 columns): every non-empty combination, nnU-Net's order
        axes = g.get("mirror_axes", [])
        self.mirrors = [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]

    def brain_mask(self, vols, row_spacing, col_spacing, channels=None):
        """The brain model's mask (uint8 0/1 on the reference grid) from the channels the stage names (or
        `channels`, e.g. another contrast); also (mask, seconds)."""
        chans = channels or self.be["channels"]
        mask, dt = self.brain.segment({bc: vols[c] for bc, c in zip(self.brain.channels, chans)}, row_spacing,
                                      col_spacing)
        return mask, dt

    def segment(self, vols, row_spacing, col_spacing):
        """vols {channel name: float32[K, rows, cols]} on the reference grid -> (labels uint8[K, rows, cols], s).
        With a brain-extraction stage, self.last_brain = (mask, seconds) of the study."""
        mask = None
        if self.brain is not None:
            mask, bdt = self.brain_mask(vols, row_spacing, col_spacing)
            self.last_brain = (mask, bdt)
            vols = preprocess.brain_extract(vols, mask, self.be["outside_value"])
        x = np.stack([vols[c] for c in self.channels])
        rows, cols = x.shape[-2:]
        xm = preprocess.to_model_grid(x, row_spacing, col_spacing, self.size, self.spacing)
        xm = preprocess.normalise(xm)
        K = xm.shape[1]
        logits = np.empty((len(self.m["output"]["classes"]), K, self.size, self.size), np.float32)
        t = time.perf_counter()
        for k in range(K):
            logits[:, k] = self.run_slice(xm[:, k])
        dt = time.perf_counter() - t
        lab = preprocess.from_model_grid(logits, rows, cols, row_spacing, col_spacing, self.size, self.spacing)
        classes = np.array(self.m["output"]["classes"], np.uint8)
        lab = classes[lab]
        if mask is not None:
            lab[mask == 0] = 0
        return lab, dt

    def run_slice(self, x):
        """x [channels, h, w] (model grid, normalised) -> logits [classes, h, w]; with geometry.mirror_axes the mean
        of the plain run and of every mirrored run mirrored back (the segmenter's order of summation)."""
        inp, outn = self.m["model"]["input_name"], self.m["model"]["output_name"]
        out = self.sess.run([outn], {inp: np.ascontiguousarray(x[None])})[0][0]
        for axes in self.mirrors:
            ax = tuple(a + 1 for a in axes)
            out = out + np.flip(self.sess.run([outn], {inp: np.ascontiguousarray(np.flip(x, ax)[None])})[0][0], ax)
        return out / (len(self.mirrors) + 1) if self.mirrors else out


def cached_render(cache, cs, geom):
    """synth.render(cs, geom, with_brain=True) -> (images, labels, brain mask), kept in the .npz `cache` (a Path,
    or None for no cache; written under a temporary name first, so an interrupted run leaves no half file)."""
    import synth

    if cache is not None and cache.exists():
        z = np.load(cache)
        return {c: z[c] for c in synth.CONTRASTS}, z["gt"], z["brain"]
    imgs, gt, brain = synth.render(cs, geom, with_brain=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, gt=gt, brain=brain, **imgs)
        tmp.rename(cache)
    return imgs, gt, brain


def read_study(folder, manifest):
    """Read a make_study.py study; match series to channels with the manifest's description rules."""
    import pydicom

    series = {}
    for d in sorted((Path(folder) / "dicom").iterdir()):
        files = sorted(d.glob("*.dcm"))
        dss = [pydicom.dcmread(f) for f in files]
        series[d.name] = dss
    inputs = {i["name"]: i for i in manifest["inputs"]}
    taken, chosen = set(), {}
    order = sorted(series, key=lambda s: (int(series[s][0].SeriesNumber), series[s][0].SeriesInstanceUID))
    for name in manifest["selection"]["match_order"]:
        rule = inputs[name]
        for s in order:
            if s in taken:
                continue
            desc = str(series[s][0].get("SeriesDescription", ""))
            if any(re.search(p, desc) for p in rule["series_description"]) and not any(
                    re.search(p, desc) for p in rule["exclude"]):
                chosen[name] = s
                taken.add(s)
                break
        else:
            raise SystemExit(f"missing input series {name}")
    vols, geo = {}, None
    for name, s in chosen.items():
        dss = series[s]
        n = np.cross(np.array(dss[0].ImageOrientationPatient[:3], float), np.array(dss[0].ImageOrientationPatient[3:], float))
        dss = sorted(dss, key=lambda d: float(np.dot(n, np.array(d.ImagePositionPatient, float))))
        arr = np.stack([d.pixel_array.astype(np.float32) * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0)) for d in dss])
        g = (tuple(np.round(np.array(dss[0].ImageOrientationPatient, float), 5)), tuple(np.round(np.array(dss[0].ImagePositionPatient, float), 3)),
             tuple(float(x) for x in dss[0].PixelSpacing), arr.shape)
        if geo is None:
            geo = g
        elif g != geo:
            raise SystemExit("series geometries differ: inter-series resampling is not implemented in eval.py")
        vols[name] = arr
        print(f"  {name:5s} <- {s} ({dss[0].SeriesDescription!r}, {len(dss)} slices, {dss[0].file_meta.TransferSyntaxUID.name})")
    ps = geo[2]
    return vols, ps[0], ps[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "brats-synth-unet2d"))
    ap.add_argument("--first", type=int, default=900000)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--study", action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write per-case results here")
    ap.add_argument("--cache", default=None, help="keep rendered cases here (rendering dominates the run time)")
    ap.add_argument("--head", action="store_true", help="held-out cases with a skull, scalp and neck (synth/head.py)")
    ap.add_argument("--no-brain", action="store_true", help="skip the manifest's [brain_extraction] stage")
    a = ap.parse_args()
    model = Model(a.model, a.threads, brain=not a.no_brain)
    rows = []
    if a.study:
        for st in a.study:
            print(st)
            vols, rs, cs_ = read_study(st, model.m)
            truth = json.loads((Path(st) / "truth" / "truth.json").read_text())
            gt = np.fromfile(Path(st) / "truth" / truth["raw_file"], np.uint8).reshape(truth["raw_shape"])
            pred, dt = model.segment(vols, rs, cs_)
            r = dict(case=str(st), slices=int(gt.shape[0]), infer_s=round(dt, 3),
                     **{k: dice(pred, gt, v) for k, v in REGIONS.items()})
            bfile = Path(st) / "truth" / "brain_ref.u8"
            if model.brain is not None and bfile.exists():
                r["brain_dice"] = dice(model.last_brain[0], np.fromfile(bfile, np.uint8).reshape(gt.shape), (1,))
            rows.append(r)
            extra = f" brain {r['brain_dice']:.4f}" if "brain_dice" in r else ""
            print(f"  WT {r['WT']:.4f} TC {r['TC']:.4f} ET {r['ET']:.4f}{extra}  ({dt:.2f} s onnxruntime)")
    else:
        for seed in range(a.first, a.first + a.cases):
            t0 = time.time()
            geom, (imgs, gt, gt_brain), (size, fov, th, obl) = heldout_case(seed, a.head, a.cache)
            pred, dt = model.segment(imgs, geom.row_spacing, geom.col_spacing)
            r = dict(case=seed, size=size, fov=round(fov, 1), thickness=th, oblique=obl, slices=geom.slices,
                     gt_ml={k: round(float(np.isin(gt, v).sum() * geom.row_spacing * geom.col_spacing * th / 1000), 1)
                            for k, v in REGIONS.items()},
                     infer_s=round(dt, 3), **{k: dice(pred, gt, v) for k, v in REGIONS.items()})
            if model.brain is not None:
                r["brain_dice"] = dice(model.last_brain[0], gt_brain, (1,))
                r["brain_s"] = round(model.last_brain[1], 3)
            rows.append(r)
            extra = f" brain {r['brain_dice']:.4f}" if "brain_dice" in r else ""
            print(f"seed {seed} {size}px fov {fov:.0f} th {th:.0f} obl {int(obl)}: WT {r['WT']:.4f} TC {r['TC']:.4f} "
                  f"ET {r['ET']:.4f}{extra}  gt ml {r['gt_ml']}  ort {dt:.2f}s  total {time.time() - t0:.1f}s",
                  flush=True)
    summarise(rows, model.m, a.json)


def heldout_case(seed, head, cache_dir):
    """A held-out case on a study-like grid (seeds 900000..): (geometry, (images, labels, brain mask),
    (size, fov, thickness, oblique)); in-plane 192-256 pixels over 220-250 mm, 2-5 mm slices, half oblique."""
    import synth
    from make_study import study_geometry

    cs = synth.make_case(seed, head=head, strong_bias=False if head else None)
    rng = np.random.default_rng([seed, 99])
    size = int(rng.choice([192, 224, 256]))
    fov = float(rng.uniform(220, 250))
    th = float(rng.choice([2.0, 3.0, 4.0, 5.0]))
    obl = bool(rng.random() < 0.5)
    geom = study_geometry(cs, rng, size, fov, th, obl)
    tag = "_head" if head else ""
    cache = Path(cache_dir) / f"eval_{seed}_{size}_{th:g}{tag}.npz" if cache_dir else None
    return geom, cached_render(cache, cs, geom), (size, fov, th, obl)


def summarise(rows, manifest, json_path):
    """Prints the mean and median Dice per region and writes the per-case rows to json_path (if any)."""
    means = {k: float(np.mean([r[k] for r in rows])) for k in REGIONS}
    medians = {k: float(np.median([r[k] for r in rows])) for k in REGIONS}
    print(f"MEAN over {len(rows)} cases: WT {means['WT']:.4f}  TC {means['TC']:.4f}  ET {means['ET']:.4f}")
    print(f"MEDIAN: WT {medians['WT']:.4f}  TC {medians['TC']:.4f}  ET {medians['ET']:.4f}")
    if json_path:
        Path(json_path).write_text(json.dumps(dict(model=manifest["model"]["name"],
                                                   version=manifest["model"]["version"],
                                                   cases=rows, mean=means, median=medians), indent=1) + "\n")


if __name__ == "__main__":
    main()
