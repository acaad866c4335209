#!/usr/bin/env python3
"""Helpers of bench/inference/before_after.sh (tract before/after the third_party/tract-core patch).

  random --out W --model M [--count K] [--seed S]   K standard-normal inputs of the model's input shape
                                                    -> W/volume.f32 [K, ...] + W/volume.json
  row --out W --label L                             one markdown row from W/tract_before.json,
                                                    W/tract_after.json, W/ort.json and the three outputs
"""
import argparse
import json
import tomllib
from pathlib import Path

import numpy as np


def random_inputs(a):
    m = tomllib.loads((Path(a.model) / "model.toml").read_text())
    shape = [a.count] + list(m["model"]["input_shape"][1:])
    x = np.random.default_rng(a.seed).standard_normal(shape).astype("<f4")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x.tofile(out / "volume.f32")
    (out / "volume.json").write_text(json.dumps(dict(seed=a.seed, shape=shape)) + "\n")


def row(a):
    out = Path(a.out)
    shape = json.loads((out / "volume.json").read_text())["shape"]
    before = np.fromfile(out / "tract_before.f32", "<f4")
    after = np.fromfile(out / "tract_after.f32", "<f4")
    ort = np.fromfile(out / "ort_out.f32", "<f4")
    assert before.size == after.size == ort.size, (before.size, after.size, ort.size)
    k = shape[0]
    before, after, ort = (v.reshape(k, -1, *shape[2:]) for v in (before, after, ort))
    # Channel axis 1: the label a voxel gets (argmax over the output channels).
    labels = int((after.argmax(1) != before.argmax(1)).sum())
    tb = json.loads((out / "tract_before.json").read_text())["seconds_per_volume_min"]
    ta = json.loads((out / "tract_after.json").read_text())["seconds_per_volume_min"]
    o = json.loads((out / "ort.json").read_text())["seconds_per_volume_min"]
    d_ba = float(np.abs(after - before).max())
    d_ao = float(np.abs(after - ort).max())
    print(f"| {a.label} | {tb:.4f} | {ta:.4f} | {o:.4f} | {tb / o:.2f} | **{ta / o:.2f}** | {tb / ta:.2f}x "
          f"| {d_ba:.1e} | {d_ao:.1e} | {labels} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["random", "row"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    {"random": random_inputs, "row": row}[a.cmd](a)


if __name__ == "__main__":
    main()
