#!/usr/bin/env python3
"""Interpolate the weights of two exports of the same network (WiSE-FT, Wortsman et al., CVPR 2022: "Robust
fine-tuning of zero-shot models"): every float initializer becomes (1 - alpha) * A + alpha * B, in float64, rounded
to the initializer's dtype; the graph is B's. A and B must be the same graph (same ops, same initializer names and
shapes), e.g. a model and its fine-tune, both exported with BatchNorm folded (models/train.py).

    .venv-train/bin/python models/wise_ft.py A.onnx B.onnx ALPHA OUT.onnx

brats-synth-unet2d 0.5.0 = 0.2.0 (A, skull-stripped training) and 0.4.0 (B, its fine-tune on heads) at alpha 0.7,
the alpha chosen on validation seeds (model card, "0.5.0").
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    a_path, b_path, alpha, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    if not 0.0 <= alpha <= 1.0:
        sys.exit(f"alpha {alpha} is not in [0, 1]")
    ma, mb = onnx.load(a_path), onnx.load(b_path)
    if [n.op_type for n in ma.graph.node] != [n.op_type for n in mb.graph.node]:
        sys.exit("the two graphs have different operators: not the same network")
    ia = {t.name: numpy_helper.to_array(t) for t in ma.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in mb.graph.initializer}
    if ia.keys() != ib.keys():
        sys.exit(f"different initializers: {sorted(ia.keys() ^ ib.keys())}")
    mixed = []
    for name, y in ib.items():
        x = ia[name]
        if x.shape != y.shape:
            sys.exit(f"{name}: shape {x.shape} vs {y.shape}")
        if y.dtype.kind == "f":
            z = ((1.0 - alpha) * x.astype(np.float64) + alpha * y.astype(np.float64)).astype(y.dtype)
        else:
            if not np.array_equal(x, y):
                sys.exit(f"{name}: non-float initializers differ")
            z = y
        mixed.append(numpy_helper.from_array(z, name))
    del mb.graph.initializer[:]
    mb.graph.initializer.extend(mixed)
    onnx.checker.check_model(mb)
    onnx.save(mb, out)
    print(f"{out}: {len(mixed)} initializers, alpha {alpha}")


if __name__ == "__main__":
    main()
