#!/usr/bin/env python3
"""Train the brats-synth-segresnet3d model (MONAI SegResNet, PyTorch, CPU) on canonical 3D cases made by
models/synth/make_3d_training_set.py, and export it to ONNX with the fixed input shape of its manifest.

    TRAIN_THREADS=1 nice -n 10 .venv-ref/bin/python models/train3d.py --data /tmp/wt15-data/train --minutes 55 \
        --ckpt /tmp/wt15-data/segresnet3d.pt --log models/brats-synth-segresnet3d/train.log
    .venv-ref/bin/python models/train3d.py --export-only --ckpt /tmp/wt15-data/segresnet3d.pt \
        --onnx models/brats-synth-segresnet3d/brats_synth_segresnet3d.onnx
    .venv-ref/bin/python models/train3d.py --export-only --onnx /tmp/untrained.onnx   # untrained: for model check

MONAI bundle conventions end to end (brats_mri_segmentation): input channels T1c, T1, T2, FLAIR on the canonical
grid (RAS, 2 mm), each z-scored over its nonzero voxels (NormalizeIntensityd(nonzero=True, channel_wise=True));
output 3 channels TC, WT, ET (ConvertToMultiChannelBasedOnBratsClassesd), sigmoid, threshold 0.5; the manifest
paints WT -> 2, TC -> 1, ET -> 4. Training labels: synthetic 0/1/2/3 (necrotic core, oedema, enhancing);
TC = {1, 3}, WT = {1, 2, 3}, ET = {3}.

Network: monai.networks.nets.SegResNet(spatial_dims=3, init_filters=8, in_channels=4, out_channels=3,
blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), upsample_mode="deconv", norm=--norm). "deconv" makes the
upsampling a ConvTranspose (no Resize op in the graph). norm "batch" (BatchNorm3d), not the default GroupNorm:
tract ran the BatchNorm and the InstanceNorm export of this network equally fast (5.1 s per window, one thread, model
check on the untrained exports), but a batch-norm network at inference (running statistics) does not depend on
how much of its window is zero padding, while group/instance statistics over a 64^3 training crop differ from
those over a padded 96 x 112 x 96 inference window.
Loss: soft Dice over the 3 sigmoid channels + BCE. Adam, cosine decay over the wall-clock budget. Patches: random
--crop crops of a case's brain box (zero-padded like the sliding window pads), 2/3 of them centred near a tumour
voxel (RandCropByPosNegLabeld-like). Augmentation as the bundle: RandFlip on each axis, per-channel intensity
scale and shift of 0.1 (RandScaleIntensityd / RandShiftIntensityd), on the nonzero voxels only.
The run is wall-clock limited and checkpoints every few minutes, so a partial run is usable; the data folder is
rescanned between epochs so training can start while the generator still runs.
"""
import argparse
import glob
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "1")))

PATCH = (96, 112, 96)  # the ONNX input's spatial shape (canonical R, A, S axes at 2 mm): one window per brain
NET = dict(init_filters=8, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))


def build(norm="batch", **kw):
    from monai.networks.nets import SegResNet

    net = dict(NET, **kw)
    return SegResNet(spatial_dims=3, in_channels=4, out_channels=3, dropout_prob=None, norm=norm,
                     upsample_mode="deconv", **net)


def regions(y):
    """labels [..] (0/1/2/3) -> float targets [3, ..] in MONAI's order TC, WT, ET."""
    return torch.stack([(y == 1) | (y == 3), y > 0, y == 3]).float()


def export(onnx_path, ckpt=None, norm="batch", patch=PATCH, opset=17):
    if ckpt:
        state = torch.load(ckpt, map_location="cpu")
        model = build(state.get("norm", norm), **state.get("net", {}))
        model.load_state_dict(state["model"])
        step = state.get("step")
    else:
        torch.manual_seed(0)
        model = build(norm)
        step = "untrained"
    model.eval()
    x = torch.zeros(1, 4, *patch)
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=opset, do_constant_folding=True)
    with torch.no_grad():
        torch.onnx.export(model, (x,), onnx_path, dynamo=False, **kw)
    import onnx

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    ops = sorted({n.op_type for n in m.graph.node})
    print("exported", onnx_path, os.path.getsize(onnx_path), "bytes, opset", m.opset_import[0].version,
          "step", step, "ops", ops)


def load_data(d, loaded):
    for f in sorted(glob.glob(os.path.join(d, "case_*.npz"))):
        if f in loaded:
            continue
        try:
            z = np.load(f)
            loaded[f] = (z["x"], z["y"], np.argwhere(z["y"] > 0).astype(np.int16))
        except Exception as e:  # a file being written
            print("skip", f, e, flush=True)
    return list(loaded.values())


def sample(case, crop, rng):
    """A crop of one case: [4, *crop] float32 and labels [*crop], zero-padded where the box is smaller."""
    x, y, tum = case
    dims = np.array(y.shape)
    crop = np.array(crop)
    if len(tum) and rng.random() < 2 / 3:
        c = tum[rng.integers(len(tum))].astype(int) + rng.integers(-crop // 4, crop // 4 + 1)
        lo = c - crop // 2
    else:
        lo = np.array([rng.integers(min(0, d - s), max(0, d - s) + 1) for d, s in zip(dims, crop)])
    xo = np.zeros((4, *crop), np.float32)
    yo = np.zeros(tuple(crop), np.uint8)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(lo + crop, dims)
    if np.all(src_hi > src_lo):
        dst_lo = src_lo - lo
        dst_hi = dst_lo + (src_hi - src_lo)
        ss = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        ds = tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))
        xo[(slice(None),) + ds] = x[(slice(None),) + ss]
        yo[ds] = y[ss]
    return xo, yo


def augment(x, y, rng):
    for ax in range(3):
        if rng.random() < 0.5:
            x, y = np.flip(x, ax + 1), np.flip(y, ax)
    nz = x != 0
    scale = 1 + rng.uniform(-0.1, 0.1, (4, 1, 1, 1))
    shift = rng.uniform(-0.1, 0.1, (4, 1, 1, 1))
    x = np.where(nz, x * scale + shift, 0).astype(np.float32)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def dice_loss(logits, t):
    p = torch.sigmoid(logits)
    dims = (0, 2, 3, 4)
    inter = (p * t).sum(dims)
    den = p.sum(dims) + t.sum(dims)
    return 1 - ((2 * inter + 1e-5) / (den + 1e-5)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/wt15-data/train")
    ap.add_argument("--minutes", type=float, default=55)
    ap.add_argument("--ckpt", default="/tmp/wt15-data/segresnet3d.pt")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--norm", default="batch")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--onnx", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="also append the progress lines to this file")
    a = ap.parse_args()
    if a.export_only:
        export(a.onnx, a.ckpt if a.ckpt and os.path.exists(a.ckpt) else None, a.norm)
        return
    logf = open(a.log, "a") if a.log else None

    def log(msg):
        print(msg, flush=True)
        if logf:
            logf.write(msg + "\n")
            logf.flush()

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    model = build(a.norm)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=1e-5)
    step = 0
    if a.resume and os.path.exists(a.ckpt):
        st = torch.load(a.ckpt, map_location="cpu")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
    log(f"train3d: SegResNet {NET} norm {a.norm}, params {sum(p.numel() for p in model.parameters())}, "
        f"crop {a.crop} batch {a.batch} lr {a.lr} budget {a.minutes} min, threads {torch.get_num_threads()}")
    loaded = {}
    t0 = time.time()
    budget = a.minutes * 60
    last_ck = t0
    hist, dices = [], []

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "norm": a.norm,
                    "net": NET}, a.ckpt + ".tmp")
        os.replace(a.ckpt + ".tmp", a.ckpt)

    while time.time() - t0 < budget:
        cases = load_data(a.data, loaded)
        log(f"epoch data: {len(cases)} cases")
        for ci in rng.permutation(len(cases)):
            el = time.time() - t0
            if el >= budget:
                break
            lr = a.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, el / budget))))
            for g in opt.param_groups:
                g["lr"] = lr
            xs, ys = zip(*(augment(*sample(cases[(ci + b) % len(cases)], a.crop, rng), rng)
                           for b in range(a.batch)))
            x = torch.from_numpy(np.stack(xs))
            t = torch.stack([regions(torch.from_numpy(y.astype(np.int64))) for y in ys])
            model.train()
            logits = model(x)
            loss = dice_loss(logits, t) + F.binary_cross_entropy_with_logits(logits, t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            hist.append(loss.item())
            with torch.no_grad():
                p = logits > 0
                q = t > 0.5
                dices.append([float(2 * (p[:, c] & q[:, c]).sum() / max(1, int(p[:, c].sum() + q[:, c].sum())))
                              if q[:, c].any() else np.nan for c in range(3)])
            if step % 25 == 0:
                d = np.nanmean(np.array(dices[-25:]), axis=0)
                log(f"step {step} t {el / 60:.1f}m lr {lr:.2e} loss {np.mean(hist[-25:]):.4f} "
                    f"patch dice TC/WT/ET {d[0]:.3f}/{d[1]:.3f}/{d[2]:.3f}")
            if time.time() - last_ck > 180:
                save()
                last_ck = time.time()
    save()
    log(f"done {step} steps {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
