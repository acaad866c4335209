#!/usr/bin/env python3
"""Held-out Dice of a patch3d model (manifest + ONNX) through onnxruntime and MONAI's own
sliding_window_inference, with the manifest's brain-extraction stage and canonical preprocessing
(models/preprocess3d.py, the numpy reference of segmenter/src/canonical.rs and patch3d.rs).

    .venv-ref/bin/python models/eval3d.py --model models/brats-synth-segresnet3d --first 900000 --cases 12 \
        [--head] [--json FILE] [--cache DIR]
    .venv-ref/bin/python models/eval3d.py --model models/brats-synth-segresnet3d --study testdata/studies/<name>

Held-out cases: seeds 900000.. (training used 400000..), rendered on study-like grids exactly as models/eval.py
does for the 2D model (in-plane 192-256 pixels over 220-250 mm, slices 2-5 mm, half of them oblique; --head: with
skull, scalp and neck), so the two models' figures are comparable. The brain model strips the study on the
reference grid, the tumour model runs on the canonical grid, sigmoid probabilities go back to the reference grid
(trilinear), are painted in the manifest's order, and labels outside the brain mask are cleared; Dice against the
exact ground truth on the reference grid (WT = labels {1,2,4} painted, i.e. truth {1,2,3}; TC {1,4} vs {1,3};
ET {4} vs {3}).
"""
import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import eval as ev  # noqa: E402
import preprocess3d as p3  # noqa: E402

def dice(p, g):
    den = p.sum() + g.sum()
    return 1.0 if den == 0 else float(2 * (p & g).sum() / den)


class Model3D:
    def __init__(self, folder, threads=1):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.m = tomllib.loads((self.folder / "model.toml").read_text())
        self.be = self.m.get("brain_extraction")
        self.brain = ev.Model(self.folder / self.be["model"], threads, brain=False) if self.be else None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(self.folder / self.m["model"]["onnx"]), so,
                                         providers=["CPUExecutionProvider"])
        self.channels = [i["name"] for i in sorted(self.m["inputs"], key=lambda i: i["channel"])]
        g, sw = self.m["geometry"], self.m["sliding_window"]
        self.orientation = g.get("orientation", "RAS")
        self.spacing = tuple(g["target_spacing_mm"])
        self.crop = g.get("crop_nonzero", False)
        self.patch = tuple(sw["patch_size"])
        self.overlap = sw["overlap"]
        self.mode = sw["blending"]
        assert sw["positions"] == "monai" and not sw.get("mirror_axes"), "eval3d runs MONAI's sliding window"
        o = self.m["output"]
        assert o["kind"] == "sigmoid_regions" and o["activation"] == "sigmoid"
        self.paints = [(p["channel"], p["label"], p["threshold"]) for p in o["paint"]]
        self.regions = {r["name"]: tuple(r["labels"]) for r in self.m["regions"]}
        self.windows = 0
        self.window_s = 0.0

    def net(self, x):
        import torch

        t = time.perf_counter()
        out = self.sess.run([self.m["model"]["output_name"]], {self.m["model"]["input_name"]: x.numpy()})[0]
        self.window_s += time.perf_counter() - t
        self.windows += 1
        return torch.from_numpy(out)

    def segment(self, vols, geom):
        """vols {channel: float32[k, j, i]} on the reference grid (a synth.Geometry) -> (labels, brain mask)."""
        import torch
        from monai.inferers import sliding_window_inference

        mask = None
        if self.brain is not None:
            mask, _ = self.brain.segment({bc: vols[c] for bc, c in zip(self.brain.channels, self.be["channels"])},
                                         geom.row_spacing, geom.col_spacing)
            out = np.float32(self.be["outside_value"])
            vols = {c: np.where(mask > 0, v, out) for c, v in vols.items()}
        axes, lo, x = p3.canonical_input([vols[c] for c in self.channels], geom, self.orientation, self.spacing,
                                         self.crop)
        with torch.no_grad():
            logits = sliding_window_inference(torch.from_numpy(x[None]), self.patch, 1, self.net,
                                              overlap=self.overlap, mode=self.mode)
        probs = torch.sigmoid(logits)[0].numpy()
        dims = (geom.slices, geom.rows, geom.cols)
        vals, inside = p3.to_reference(probs, axes, lo, dims)
        lab = p3.paint(vals, inside, self.paints)
        if mask is not None:
            lab[mask == 0] = 0
        return lab, mask, x.shape[1:]


def study_geometry_from_dicom(folder):
    """(vols by series folder, synth.Geometry of the FLAIR series) of a make_study.py study (one shared grid)."""
    import pydicom
    import synth

    vols, geo = {}, None
    for d in sorted((Path(folder) / "dicom").iterdir()):
        dss = [pydicom.dcmread(f) for f in sorted(d.glob("*.dcm"))]
        iop = np.array(dss[0].ImageOrientationPatient, float)
        r, c = iop[:3], iop[3:]
        n = np.cross(r, c)
        dss = sorted(dss, key=lambda x: float(np.dot(n, np.array(x.ImagePositionPatient, float))))
        arr = np.stack([x.pixel_array.astype(np.float32) * float(x.get("RescaleSlope", 1))
                        + float(x.get("RescaleIntercept", 0)) for x in dss])
        pos = [np.array(x.ImagePositionPatient, float) for x in dss]
        step = float(np.dot(n, pos[-1] - pos[0]) / (len(pos) - 1))
        ps = [float(v) for v in dss[0].PixelSpacing]
        geo = synth.Geometry(r, c, pos[0], arr.shape[1], arr.shape[2], ps[0], ps[1], arr.shape[0], step,
                             float(dss[0].SliceThickness))
        name = {"01": "T1", "02": "T1CE", "03": "T2", "04": "FLAIR"}[d.name[:2]]
        vols[name] = arr
    return vols, geo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "brats-synth-segresnet3d"))
    ap.add_argument("--first", type=int, default=900000)
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--study", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=None, help="keep rendered cases here")
    ap.add_argument("--head", action="store_true")
    a = ap.parse_args()
    model = Model3D(a.model, a.threads)
    rows = []

    def score(case, pred, gt, mask, gt_brain, extra):
        r = dict(case=case, **extra,
                 **{k: dice(np.isin(pred, model.regions[k]), np.isin(gt, ev.REGIONS[k])) for k in ev.REGIONS})
        if mask is not None and gt_brain is not None:
            r["brain_dice"] = ev.dice(mask, gt_brain, (1,))
        rows.append(r)
        print(f"{case}: WT {r['WT']:.4f} TC {r['TC']:.4f} ET {r['ET']:.4f} "
              + (f"brain {r['brain_dice']:.4f} " if "brain_dice" in r else "") + json.dumps(extra), flush=True)

    if a.study:
        for st in a.study:
            vols, geom = study_geometry_from_dicom(st)
            truth = json.loads((Path(st) / "truth" / "truth.json").read_text())
            gt = np.fromfile(Path(st) / "truth" / truth["raw_file"], np.uint8).reshape(truth["raw_shape"])
            bfile = Path(st) / "truth" / "brain_ref.u8"
            gb = np.fromfile(bfile, np.uint8).reshape(gt.shape) if bfile.exists() else None
            model.windows, model.window_s = 0, 0.0
            pred, mask, box = model.segment(vols, geom)
            score(str(st), pred, gt, mask, gb, dict(box=list(box), windows=model.windows,
                                                     ort_s=round(model.window_s, 2)))
    else:
        for seed in range(a.first, a.first + a.cases):
            geom, (imgs, gt, gt_brain), (size, _, th, obl) = ev.heldout_case(seed, a.head, a.cache)
            model.windows, model.window_s = 0, 0.0
            pred, mask, box = model.segment(imgs, geom)
            score(seed, pred, gt, mask, gt_brain, dict(size=size, thickness=th, oblique=obl, head=a.head,
                                                       box=list(box), windows=model.windows,
                                                       ort_s=round(model.window_s, 2)))
    ev.summarise(rows, model.m, a.json)


if __name__ == "__main__":
    main()
