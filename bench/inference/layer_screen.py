#!/usr/bin/env python3
"""Which layer shapes does tract run close to onnxruntime? One thread each, same run.

  .venv-train/bin/python bench/inference/layer_screen.py [--exe target/release/examples/bench_inference]
                                                         [--work target/bench-inference/screen] [NAME ...]

Each case is a small graph on a [1,4,128,128] input: a 1x1 stem to C channels (max-pooled first to the case's
resolution), then four of the layer under test with ReLU. Both runtimes time 24 random slices (min of 5 runs);
the line printed per case is tract s, onnxruntime s, their ratio and each runtime's multiply-accumulate rate.
Build the example first (bench/inference/run.sh does, or `cargo build -p segmenter --example bench_inference
--release`). Out of CI: a measurement, not a test.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SLICES = 24


class Case(nn.Module):
    def __init__(self, c, res, layer):
        super().__init__()
        self.res = res
        self.stem = nn.Conv2d(4, c, 1)
        self.body = nn.Sequential(*[nn.Sequential(layer(c), nn.ReLU()) for _ in range(4)])

    def forward(self, x):
        if self.res < 128:
            x = F.max_pool2d(x, 128 // self.res)
        return self.body(F.relu(self.stem(x)))


class Separable(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


LAYERS = {
    # name: (layer factory, multiply-accumulates per output pixel for C channels)
    "conv3x3": (lambda c: nn.Conv2d(c, c, 3, padding=1), lambda c: 9 * c * c),
    "conv1x1": (lambda c: nn.Conv2d(c, c, 1), lambda c: c * c),
    "conv5x5": (lambda c: nn.Conv2d(c, c, 5, padding=2), lambda c: 25 * c * c),
    "conv3x3dil2": (lambda c: nn.Conv2d(c, c, 3, padding=2, dilation=2), lambda c: 9 * c * c),
    "depthwise3x3": (lambda c: nn.Conv2d(c, c, 3, padding=1, groups=c), lambda c: 9 * c),
    "separable": (Separable, lambda c: 9 * c + c * c),
}
SHAPES = [(128, 16), (128, 32), (64, 32), (64, 64), (32, 64), (16, 128), (8, 64)]
CASES = {f"{k}_{r}px_{c}ch": (k, r, c) for k in LAYERS for r, c in SHAPES}


def mmac(kind, res, c):
    return SLICES * (4 * LAYERS[kind][1](c) + 4 * c) * res * res / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=str(ROOT / "target/release/examples/bench_inference"))
    ap.add_argument("--work", default=str(ROOT / "target/bench-inference/screen"))
    ap.add_argument("cases", nargs="*", help=f"default: all of {', '.join(CASES)}")
    a = ap.parse_args()
    import onnxruntime as ort

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((SLICES, 4, 128, 128)).astype("<f4")
    print(f"{'case':24s} {'tract s':>8s} {'ort s':>8s} {'ratio':>6s} {'tract GMAC/s':>13s} {'ort GMAC/s':>11s}")
    for name in a.cases or CASES:
        kind, res, c = CASES[name]
        d = Path(a.work) / name
        d.mkdir(parents=True, exist_ok=True)
        model = Case(c, res, LAYERS[kind][0]).eval()
        torch.onnx.export(model, torch.randn(1, 4, 128, 128), d / "m.onnx", opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamo=False)
        (d / "model.toml").write_text('[model]\nonnx = "m.onnx"\ninput_shape = [1, 4, 128, 128]\n'
                                      'input_name = "image"\noutput_name = "logits"\n')
        x.tofile(d / "volume.f32")
        run = subprocess.run([a.exe, "--model", str(d), "--input", str(d / "volume.f32"), "--threads", "1",
                              "--repeat", "5", "--output", str(d / "tract_out.f32")],
                             capture_output=True, text=True, check=True)
        tract_s = json.loads(run.stdout.strip().splitlines()[-1])["seconds_per_volume_min"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(d / "m.onnx"), so, providers=["CPUExecutionProvider"])
        slices = [np.ascontiguousarray(x[k:k + 1]) for k in range(SLICES)]
        sess.run(None, {"image": slices[0]})
        times = []
        for _ in range(5):
            t = time.perf_counter()
            outs = [sess.run(None, {"image": s})[0] for s in slices]
            times.append(time.perf_counter() - t)
        ort_s = min(times)
        tract_out = np.fromfile(d / "tract_out.f32", "<f4").reshape(np.concatenate(outs).shape)
        diff = float(np.abs(tract_out - np.concatenate(outs)).max())
        if diff > 1e-3:
            sys.exit(f"{name}: tract and onnxruntime disagree by {diff}")
        g = mmac(kind, res, c) / 1e3
        print(f"{name:24s} {tract_s:8.4f} {ort_s:8.4f} {tract_s / ort_s:6.2f} {g / tract_s:13.1f} {g / ort_s:11.1f}",
              flush=True)


if __name__ == "__main__":
    main()
