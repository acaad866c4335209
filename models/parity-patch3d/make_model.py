#!/usr/bin/env python3
"""Writes parity_patch3d.onnx: a tiny 3D network with fixed random weights, used to prove that
segnode's patch3d sliding window equals MONAI's and nnU-Net's on the same ONNX, and by
`segnode model check`. It is NOT a segmenter (random weights: its output means nothing).

The graph is written directly with onnx.helper (no torch needed, bit-reproducible from the seed):
    x[1,4,P0,P1,P2] -> Conv3d 4->8 k3 p1 -> Relu -> Conv3d 8->8 k3 dilation 2 p2 -> Relu
                    -> Conv3d 8->3 k1  (+ a Conv3d 4->3 k1 skip from x) -> y[1,3,P0,P1,P2]
Zero padding at the patch borders makes a voxel's output depend on where the patch lies, so the
blending of overlapping windows is what the parity test sees (a pointwise net would hide it).

Usage: python make_model.py [--out models/parity-patch3d/parity_patch3d.onnx]
Needs numpy and onnx (`.venv-ref` from scripts/install-test-deps.sh has both).
"""
import argparse
import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PATCH = (32, 24, 16)  # fixed input shape [1, 4, *PATCH]; axes are the canonical (R, A, S) axes
IN_CH, MID, OUT_CH = 4, 8, 3
SEED = 20261130


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/parity-patch3d/parity_patch3d.onnx")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)

    def w(*shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = {
        "w1": w(MID, IN_CH, 3, 3, 3, fan_in=IN_CH * 27),
        "b1": (0.1 * rng.standard_normal(MID)).astype(np.float32),
        "w2": w(MID, MID, 3, 3, 3, fan_in=MID * 27),
        "b2": (0.1 * rng.standard_normal(MID)).astype(np.float32),
        "w3": w(OUT_CH, MID, 1, 1, 1, fan_in=MID),
        "b3": (0.1 * rng.standard_normal(OUT_CH)).astype(np.float32),
        "ws": w(OUT_CH, IN_CH, 1, 1, 1, fan_in=IN_CH),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1",
                         kernel_shape=[3, 3, 3], pads=[1] * 6),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2",
                         kernel_shape=[3, 3, 3], pads=[2] * 6, dilations=[2, 2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", kernel_shape=[1, 1, 1]),
        helper.make_node("Conv", ["input", "ws"], ["skip"], name="skip", kernel_shape=[1, 1, 1]),
        helper.make_node("Add", ["c3", "skip"], ["logits"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "parity_patch3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, IN_CH, *PATCH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, OUT_CH, *PATCH])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="segnode models/parity-patch3d/make_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes) sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
