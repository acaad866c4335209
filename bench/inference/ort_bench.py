#!/usr/bin/env python3
"""onnxruntime side of bench/inference (run by run.sh with .venv-train/bin/python).

  prepare --out W [--seed 31337]   render one synthetic study-like volume (256x256, 240 mm FOV, 3 mm slices),
                                   preprocess it as the manifest says -> W/volume.f32 [K,4,128,128] + volume.json
  ort --out W --threads N --repeat R   time onnxruntime per volume (same slices, fixed shape [1,4,128,128]),
                                   write W/ort_out.f32, print a JSON line
  compare --out W                  max |tract - ort| over the whole volume, label agreement, time ratio
"""
import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "models" / "synth"))


def prepare(a):
    import preprocess
    import synth
    from make_study import study_geometry

    m = tomllib.loads((Path(a.model) / "model.toml").read_text())
    if m["geometry"]["kind"] == "patch3d":
        return prepare3d(a, m)
    cs = synth.make_case(a.seed)
    geom = study_geometry(cs, np.random.default_rng([a.seed, 11]), 256, 240.0, 3.0, False)
    imgs, lab = synth.render(cs, geom)
    names = [i["name"] for i in sorted(m["inputs"], key=lambda i: i["channel"])]
    x = np.stack([imgs[n] for n in names])
    size, sp = m["geometry"]["size"][0], m["geometry"]["spacing_mm"][0]
    xm = preprocess.normalise(preprocess.to_model_grid(x, geom.row_spacing, geom.col_spacing, size, sp))
    vol = np.ascontiguousarray(xm.transpose(1, 0, 2, 3)).astype("<f4")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vol.tofile(out / "volume.f32")
    (out / "volume.json").write_text(json.dumps(dict(seed=a.seed, shape=list(vol.shape))) + "\n")
    print(f"prepared {out / 'volume.f32'} shape {list(vol.shape)}", file=sys.stderr)


def prepare3d(a, m):
    """A patch3d model: the windows of the same seed-31337 study (256 x 256 over 240 mm, 3 mm slices), stripped by
    the manifest's brain model, on the canonical grid, cropped and normalised as the manifest says
    (models/preprocess3d.py), padded and cut into MONAI's windows -> W/volume.f32 [windows, C, P0, P1, P2]."""
    import eval as ev
    import preprocess3d as p3
    import synth
    from make_study import study_geometry
    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    cs = synth.make_case(a.seed)
    geom = study_geometry(cs, np.random.default_rng([a.seed, 11]), 256, 240.0, 3.0, False)
    imgs, _ = synth.render(cs, geom)
    g, sw, be = m["geometry"], m["sliding_window"], m.get("brain_extraction")
    names = [i["name"] for i in sorted(m["inputs"], key=lambda i: i["channel"])]
    if be:
        brain = ev.Model(Path(a.model) / be["model"], 1, brain=False)
        mask, _ = brain.segment({brain.channels[0]: imgs[be["channels"][0]]}, geom.row_spacing, geom.col_spacing)
        imgs = {k: np.where(mask > 0, v, np.float32(be["outside_value"])) for k, v in imgs.items()}
    _, _, x = p3.canonical_input([imgs[n] for n in names], geom, g.get("orientation", "RAS"),
                                 g["target_spacing_mm"], g.get("crop_nonzero", False))
    patch = tuple(sw["patch_size"])
    box = list(x.shape[1:])
    pad = [(0, 0)] + [((p - d) // 2, p - d - (p - d) // 2) if d < p else (0, 0) for d, p in zip(box, patch)]
    x = np.pad(x, pad)
    interval = _get_scan_interval(x.shape[1:], patch, 3, (sw["overlap"],) * 3)
    wins = [np.ascontiguousarray(x[(slice(None),) + tuple(sl)]) for sl in
            dense_patch_slices(x.shape[1:], patch, interval)]
    vol = np.stack(wins).astype("<f4")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vol.tofile(out / "volume.f32")
    (out / "volume.json").write_text(json.dumps(dict(seed=a.seed, shape=list(vol.shape), canonical_box=box)) + "\n")
    print(f"prepared {out / 'volume.f32'} shape {list(vol.shape)} (canonical box {box})", file=sys.stderr)


def run_ort(a):
    import onnxruntime as ort

    m = tomllib.loads((Path(a.model) / "model.toml").read_text())
    out = Path(a.out)
    shape = json.loads((out / "volume.json").read_text())["shape"]
    vol = np.fromfile(out / "volume.f32", "<f4").reshape(shape)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    t = time.perf_counter()
    sess = ort.InferenceSession(str(Path(a.model) / m["model"]["onnx"]), so, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t
    inp, outn = m["model"]["input_name"], m["model"]["output_name"]
    slices = [np.ascontiguousarray(vol[k:k + 1]) for k in range(vol.shape[0])]
    sess.run([outn], {inp: slices[0]})  # warm-up
    times, logits = [], None
    for r in range(a.repeat):
        t = time.perf_counter()
        outs = [sess.run([outn], {inp: s})[0] for s in slices]
        times.append(time.perf_counter() - t)
        if r == 0:
            logits = np.concatenate(outs).astype("<f4")
    logits.tofile(out / "ort_out.f32")
    st = sorted(times)
    print(json.dumps(dict(runtime=f"onnxruntime {ort.__version__}", threads=a.threads, slices=len(slices),
                          load_s=round(load, 3), seconds_per_volume_min=round(st[0], 4),
                          seconds_per_volume_median=round(st[len(st) // 2], 4), runs=[round(x, 4) for x in times])))


def compare(a):
    out = Path(a.out)
    shape = json.loads((out / "volume.json").read_text())["shape"]
    ort_o = np.fromfile(out / "ort_out.f32", "<f4")
    tr_o = np.fromfile(out / "tract_out.f32", "<f4")
    assert ort_o.size == tr_o.size, (ort_o.size, tr_o.size)
    ort_o = ort_o.reshape(shape[0], -1, *shape[2:])
    tr_o = tr_o.reshape(ort_o.shape)
    diff = float(np.abs(ort_o - tr_o).max())
    if len(shape) == 5:  # patch3d sigmoid regions: voxels thresholded differently (logit sign)
        lab_mis = int(((ort_o > 0) != (tr_o > 0)).sum())
    else:
        lab_mis = int((ort_o.argmax(1) != tr_o.argmax(1)).sum())
    tj = json.loads((out / "tract.json").read_text())
    oj = json.loads((out / "ort.json").read_text())
    ratio = tj["seconds_per_volume_min"] / oj["seconds_per_volume_min"]
    res = dict(volume_shape=shape, max_abs_diff=diff, label_mismatches=lab_mis,
               tract_s_per_volume=tj["seconds_per_volume_min"], ort_s_per_volume=oj["seconds_per_volume_min"],
               threads=tj["threads"], tract_slice_threads=tj.get("slice_threads", 1),
               ort_threads=oj["threads"], ratio_tract_over_ort=round(ratio, 3),
               agreement_ok=diff <= 1e-4, speed_ok=ratio <= 1.5)
    (out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"volume {shape}: max |tract - onnxruntime| = {diff:.3e} ({'OK' if diff <= 1e-4 else 'FAIL'} <= 1e-4), "
          f"label mismatches {lab_mis}")
    print(f"time per volume: tract {tj['seconds_per_volume_min']:.3f} s ({tj['threads']} kernel thread(s) x "
          f"{tj.get('slice_threads', 1)} slice(s) at once), onnxruntime {oj['seconds_per_volume_min']:.3f} s "
          f"({oj['threads']} intra-op threads), ratio tract/ort = {ratio:.2f} "
          f"({'OK' if ratio <= 1.5 else 'ABOVE'} target 1.5)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prepare", "ort", "compare"])
    ap.add_argument("--out", default=str(ROOT / "target" / "bench-inference"))
    ap.add_argument("--model", default=str(ROOT / "models" / "brats-synth-unet2d"))
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    {"prepare": prepare, "ort": run_ort, "compare": compare}[a.cmd](a)


if __name__ == "__main__":
    main()
