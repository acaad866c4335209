#!/usr/bin/env python3
"""The peers' sliding-window inference on the same ONNX and the same canonical input, for the parity
test (segmenter/tests/integration/patch3d_parity.rs). Runs in `.venv-ref` (scripts/install-test-deps.sh: CPU use
of torch, monai==1.6.1, nnunetv2==2.8.1, onnxruntime).

Input: a raw little-endian float32 file holding the canonical, normalised volume [C, X, Y, Z]
(C-order, Z fastest), its shape, the ONNX file and its fixed patch size. The network is the ONNX run
by onnxruntime inside a torch.nn.Module, so the peers drive it exactly as they drive their own nets.

Writes raw float32 [K, X, Y, Z] files into --out:
  monai_constant.f32  monai.inferers.sliding_window_inference(overlap, mode="constant")
  monai_gaussian.f32  the same with mode="gaussian", sigma_scale
  nnunet.f32, nnunet_mirror.f32
      nnunetv2's nnUNetPredictor.predict_sliding_window_return_logits (its own slicers, its own
      compute_gaussian with sigma 1/8 of the patch, tile_step_size, its mirroring over all axis
      combinations), with ONE change: nnU-Net 2.8.1 accumulates the logits and the weights in
      float16 (torch.half, hard-coded) and casts its Gaussian to float16; here torch.half is bound
      to float32 during the call and compute_gaussian is asked for float32, so the result is
      nnU-Net's algorithm at segnode's precision (f32 accumulation), comparable within 1e-4.
  nnunet_f16.f32, nnunet_f16_mirror.f32
      the same call unmodified (half-precision accumulators), for the fp16-tolerance check.
"""
import argparse
import functools
import os
import types

import numpy as np
import onnxruntime as ort
import torch

from monai.inferers import sliding_window_inference
import nnunetv2.inference.predict_from_raw_data as nn_pred
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian


class OnnxNet(torch.nn.Module):
    """The ONNX file as a torch module (batch 1, fixed shape), run by onnxruntime on the CPU."""

    def __init__(self, path):
        super().__init__()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.sess.run(None, {self.name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(y)


def nnunet(net, image, patch, classes, step, mirror, f32):
    p = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=mirror,
                        perform_everything_on_device=False, device=torch.device("cpu"),
                        verbose=False, allow_tqdm=False)
    # What initialize_from_trained_model_folder would set from a plans file: the network, the patch
    # size of the configuration, the number of output channels and the mirroring axes.
    p.network = net
    p.configuration_manager = types.SimpleNamespace(patch_size=list(patch))
    p.label_manager = types.SimpleNamespace(num_segmentation_heads=classes)
    p.allowed_mirroring_axes = (0, 1, 2)
    x = torch.from_numpy(image)
    if not f32:
        return p.predict_sliding_window_return_logits(x).float().numpy()
    half, gauss = torch.half, nn_pred.compute_gaussian
    try:
        torch.half = torch.float32
        nn_pred.compute_gaussian = functools.partial(compute_gaussian, dtype=torch.float32)
        out = p.predict_sliding_window_return_logits(x)
    finally:
        torch.half = half
        nn_pred.compute_gaussian = gauss
    assert out.dtype == torch.float32, out.dtype
    return out.numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--shape", required=True, help="C,X,Y,Z")
    ap.add_argument("--patch", required=True, help="P0,P1,P2")
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sigma-scale", type=float, default=0.125)
    ap.add_argument("--step", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(s) for s in args.shape.split(","))
    patch = tuple(int(s) for s in args.patch.split(","))
    image = np.fromfile(args.input, dtype="<f4").reshape(shape)
    net = OnnxNet(args.onnx)
    os.makedirs(args.out, exist_ok=True)

    def save(name, arr):
        arr = np.ascontiguousarray(arr, dtype="<f4")
        assert arr.shape == (args.classes, *shape[1:]), (name, arr.shape)
        arr.tofile(os.path.join(args.out, name + ".f32"))
        print(f"{name}: {net.calls} network calls so far")

    x = torch.from_numpy(image)[None]
    for mode in ("constant", "gaussian"):
        with torch.no_grad():
            y = sliding_window_inference(x, patch, 1, net, overlap=args.overlap, mode=mode,
                                         sigma_scale=args.sigma_scale)
        save(f"monai_{mode}", y[0].numpy())
    for mirror in (False, True):
        suffix = "_mirror" if mirror else ""
        save(f"nnunet{suffix}", nnunet(net, image, patch, args.classes, args.step, mirror, True))
        save(f"nnunet_f16{suffix}", nnunet(net, image, patch, args.classes, args.step, mirror, False))


if __name__ == "__main__":
    main()
