#!/usr/bin/env python3
"""Write the golden pair for a slice2d model: one preprocessed input slice and onnxruntime's output.

    .venv-train/bin/python models/make_golden.py --model models/brats-synth-unet2d --seed 424242

Files (in <model>/golden/): input.f32, output.f32 (raw little-endian float32, C order) and golden.json (shapes,
the ONNX file's SHA-256, how it was made, tolerance). segmenter/tests/integration/golden_model.rs runs the ONNX through
tract-onnx on input.f32 and requires max |tract - onnxruntime| <= 1e-4.
Input: the case with that seed rendered on a 128x128 2 mm grid, normalised as the manifest says, and the
slice with the most tumour.
"""
import argparse
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
import preprocess  # noqa: E402
import synth  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE / "brats-synth-unet2d"))
    ap.add_argument("--seed", type=int, default=424242)
    a = ap.parse_args()
    folder = Path(a.model)
    m = tomllib.loads((folder / "model.toml").read_text())
    onnx_path = folder / m["model"]["onnx"]
    cs = synth.make_case(a.seed)
    geom = synth.random_geometry(np.random.default_rng([a.seed, 1]), cs, oblique=False, thickness=3.0)
    imgs, lab = synth.render(cs, geom)
    x = preprocess.normalise(np.stack([imgs[c] for c in synth.CONTRASTS]))
    k = int(np.argmax((lab > 0).sum(axis=(1, 2))))
    inp = np.ascontiguousarray(x[None, :, k]).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = sess.run([m["model"]["output_name"]], {m["model"]["input_name"]: inp})[0].astype(np.float32)
    g = folder / "golden"
    g.mkdir(exist_ok=True)
    inp.astype("<f4").tofile(g / "input.f32")
    out.astype("<f4").tofile(g / "output.f32")
    meta = dict(
        onnx=m["model"]["onnx"], onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        input_name=m["model"]["input_name"], output_name=m["model"]["output_name"],
        input_file="input.f32", input_shape=list(inp.shape), output_file="output.f32", output_shape=list(out.shape),
        dtype="float32 little-endian, C order", tolerance_max_abs=1e-4,
        made_by=f"models/make_golden.py --seed {a.seed} (slice {k} of a 3 mm axial 128x128 2 mm stack)",
        reference_runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider, 1 thread",
        output_labels_in_slice=np.bincount(out[0].argmax(0).ravel(), minlength=4).tolist(),
        truth_labels_in_slice=np.bincount(lab[k].ravel(), minlength=4).tolist(),
    )
    (g / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
