#!/usr/bin/env python3
"""Write the golden pair of a patch3d model: one canonical input window and onnxruntime's output on it.

    .venv-ref/bin/python models/make_golden3d.py --model models/brats-synth-segresnet3d --seed 424242

The input: the case with that seed (a head, axial 3 mm stack, 1.5 mm pixels) stripped by the manifest's brain
model, on the canonical grid, cropped to the brain box and normalised (models/preprocess3d.py), padded to the
patch as the sliding window pads it, then rounded to multiples of 1/16 (so that it is stored exactly and
compactly: int8 = round(16 x), clipped to +-127, gzip). The network input IS that rounded tensor.
Files (in <model>/golden/): input.i8.gz (int8, C order, value = int8 / 16), output_sub.f32 (onnxruntime's output
at every 4th voxel along each spatial axis, [1, K, ceil(P0/4), ceil(P1/4), ceil(P2/4)], little-endian float32;
the whole output is 12 MB), golden.json (shapes, the ONNX file's SHA-256, the count of positive logits per output
channel over the whole output, tolerance). segmenter/tests/integration/golden_model.rs runs the ONNX through
tract on the input and requires max |tract - onnxruntime| <= 1e-4 on the stored voxels and the same positive
counts (up to a few voxels whose logit is within the tolerance of 0).
"""
import argparse
import gzip
import hashlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "synth"))
import eval as ev  # noqa: E402
import preprocess3d as p3  # noqa: E402
import synth  # noqa: E402

SCALE = 16
STRIDE = 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "brats-synth-segresnet3d"))
    ap.add_argument("--seed", type=int, default=424242)
    a = ap.parse_args()
    folder = Path(a.model)
    m = tomllib.loads((folder / "model.toml").read_text())
    onnx_path = folder / m["model"]["onnx"]
    patch = m["sliding_window"]["patch_size"]
    g = m["geometry"]
    cs = synth.make_case(a.seed, head=True, strong_bias=False)
    rng = np.random.default_rng([a.seed, 1])
    geom = synth.Geometry.centred(np.eye(3), cs.centre_subject + rng.uniform(-5, 5, 3), 160, 160, 1.5, 1.5,
                                  57, 3.0)
    imgs, lab = synth.render(cs, geom)
    be = m["brain_extraction"]
    brain = ev.Model(folder / be["model"], 1, brain=False)
    mask, _ = brain.segment({brain.channels[0]: imgs[be["channels"][0]]}, geom.row_spacing, geom.col_spacing)
    names = [i["name"] for i in sorted(m["inputs"], key=lambda i: i["channel"])]
    chans = [np.where(mask > 0, imgs[n], np.float32(0)) for n in names]
    axes, lo, x = p3.canonical_input(chans, geom, g["orientation"], g["target_spacing_mm"], g["crop_nonzero"])
    assert all(d <= p for d, p in zip(x.shape[1:], patch)), (x.shape, patch)
    box = list(x.shape[1:])
    pad = [(0, 0)] + [((p - d) // 2, p - d - (p - d) // 2) for d, p in zip(box, patch)]
    x = np.pad(x, pad)
    q = np.clip(np.round(x * SCALE), -127, 127).astype(np.int8)
    inp = (q.astype(np.float32) / np.float32(SCALE))[None]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = sess.run([m["model"]["output_name"]], {m["model"]["input_name"]: inp})[0].astype(np.float32)
    sub = np.ascontiguousarray(out[:, :, ::STRIDE, ::STRIDE, ::STRIDE])
    gdir = folder / "golden"
    gdir.mkdir(exist_ok=True)
    with gzip.GzipFile(gdir / "input.i8.gz", "wb", mtime=0) as f:
        f.write(q[None].tobytes())
    sub.astype("<f4").tofile(gdir / "output_sub.f32")
    meta = dict(
        onnx=m["model"]["onnx"], onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        input_name=m["model"]["input_name"], output_name=m["model"]["output_name"],
        input_file="input.i8.gz", input_encoding=f"gzip of int8, C order; value = int8 / {SCALE}",
        input_scale=SCALE, input_shape=list(inp.shape), output_shape=list(out.shape),
        output_sub_file="output_sub.f32", output_sub_stride=STRIDE, output_sub_shape=list(sub.shape),
        output_positive_per_channel=[int((out[0, c] > 0).sum()) for c in range(out.shape[1])],
        dtype="float32 little-endian, C order", tolerance_max_abs=1e-4,
        made_by=f"models/make_golden3d.py --seed {a.seed} (head, axial 57 x 3 mm, 160 x 160 x 1.5 mm, stripped by "
                f"the brain model, canonical box {box} before padding)",
        reference_runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider, 1 thread",
        truth_voxels_on_acquisition_grid=np.bincount(lab.ravel(), minlength=4).tolist(),
    )
    (gdir / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
