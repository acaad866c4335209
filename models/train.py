#!/usr/bin/env python3
"""Train the brats-synth-unet2d demo model (PyTorch, CPU) on slices made by models/synth/make_training_set.py,
and export it to ONNX.

    .venv-train/bin/python models/train.py --arch s2d --data /tmp/brats-synth-train --minutes 38 \
        --ckpt /tmp/brats-synth-unet2d.pt
    .venv-train/bin/python models/train.py --export-only --ckpt /tmp/brats-synth-unet2d.pt \
        --onnx models/brats-synth-unet2d/brats_synth_unet2d.onnx

Network: 2D U-Net, input [1, 4, 128, 128] (T1, T1CE, T2, FLAIR, normalised as in models/preprocess.py), four
resolution levels with 12/24/48/96 channels, two 3x3 conv + BatchNorm + ReLU per block, max-pool down,
2x2 transposed-conv up, 1x1 conv head -> [1, 4, 128, 128] logits (background, necrotic core, oedema,
enhancing); that is `--arch unet`, brats-synth-unet2d 0.1.0. `--arch s2d` (0.2.0, shipped): the same blocks
behind a 2x2 space-to-depth stem (three levels of 24/48/96 channels at 64x64 and below) with a depth-to-space
head, same input and output shapes. Loss: cross-entropy + soft Dice over the three tumour classes. Adam, lr 2e-3
with cosine decay over the time budget. Augmentation: optional 96x96 crops (--crop-prob of the batches; 90 % of them around a tumour pixel), left-right flip, per-channel intensity scale/shift, small Gaussian noise.

`--arch mask` trains the brain-extraction model (models/brain-mask-synth) on models/synth/make_brainmask_set.py
slices: one input channel (a random contrast of each slice), two classes (outside / brain), a narrower
space-to-depth U-Net (16/32/64 channels), same loss and augmentation. `--arch mask4`: the same task behind a
4x4 space-to-depth stem (24/48/96 channels at 32 x 32 and below), measured at 0.36-0.45x the `mask` network's
tract time (bench/e2e/RESULTS.md); a 15-minute run is not yet as good a mask as `mask`. `--contrast-weights
1,1,3,1` draws the contrast of each slice with those odds (T1, T1CE, T2, FLAIR) instead of evenly: T2 is the
contrast the mask model is worst on (models/brain-mask-synth/README.md).

`--init-onnx FILE` fine-tunes from an exported model: the network is built without BatchNorm (the export folded
it into the convolutions) and starts from the ONNX file's weights (brats-synth-unet2d 0.4.0: 0.3.0's weights
fine-tuned on models/synth/make_head_training_set.py, heads stripped as the brain-extraction stage does).

`--arch s2d-wide --widen-from FILE`: the s2d network a third wider (32/64/128 channels), started from an s2d
export widened without changing its function (Net2WiderNet, `widen`), then fine-tuned like `--init-onnx`:
more capacity for heads with motion ghosting without giving up what the narrow network knows (issue 14).

The training run is wall-clock limited (--minutes) and checkpoints every few minutes, so a partial run is usable.
The data directory is rescanned every "epoch" so training can start while the generator still runs.
"""
import argparse
import glob
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
SIZE = 128
CH = (12, 24, 48, 96)


def block(cin, cout, bn=True):
    if not bn:  # the exported (BatchNorm-folded) form: what --init-onnx fine-tunes
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """`stem` > 1 folds each stem x stem pixel block into channels first (space-to-depth) and unfolds the head's
    output the same way (depth-to-space): the U-Net then runs at 1/stem of the resolution, which cut the
    inference time on CPU by about a third at about the same parameter count (bench/inference/RESULTS.md)."""

    def __init__(self, cin=4, ncls=4, ch=CH, stem=1, bn=True):
        super().__init__()
        self.stem = stem
        self.enc = nn.ModuleList()
        c = cin * stem * stem
        for co in ch:
            self.enc.append(block(c, co, bn))
            c = co
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for co in reversed(ch[:-1]):
            self.up.append(nn.ConvTranspose2d(c, co, 2, stride=2))
            self.dec.append(block(2 * co, co, bn))
            c = co
        self.head = nn.Conv2d(c, ncls * stem * stem, 1)

    def forward(self, x):
        if self.stem > 1:
            x = F.pixel_unshuffle(x, self.stem)
        skips = []
        for i, b in enumerate(self.enc):
            x = b(x)
            if i < len(self.enc) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], 1))
        x = self.head(x)
        return F.pixel_shuffle(x, self.stem) if self.stem > 1 else x


# --arch: the full-resolution U-Net of 0.1.0, and the space-to-depth variant shipped since 0.2.0.
# "mask": the brain-extraction model (models/brain-mask-synth): one input channel (any contrast), two classes
# (outside / brain), a narrower space-to-depth U-Net.
ARCHS = {
    "unet": dict(ch=CH, stem=1),
    "s2d": dict(ch=(24, 48, 96), stem=2),
    "mask": dict(cin=1, ncls=2, ch=(16, 32, 64), stem=2),
    # a candidate for brain-mask-synth 0.2.0, not shipped (bench/e2e/RESULTS.md; 0.2.0 and 0.3.0 are "mask"): a 4x4
    # space-to-depth stem (16 channels at 32 x 32) in front of the tumour model's
    # 24/48/96 levels: a quarter of the tumour model's multiply-adds, at the channel widths tract runs well
    # (0.1.0's 16-channel level at 64 x 64 cost about as much as the whole tumour model, bench/e2e/RESULTS.md).
    "mask4": dict(cin=1, ncls=2, ch=(24, 48, 96), stem=4),
    # the s2d network a third wider (32/64/128 channels), grown from an s2d export by --widen-from (issue 14,
    # session 18; brats-synth-unet2d 0.6.0)
    "s2d-wide": dict(ch=(32, 64, 128), stem=2),
}


def load_onnx_weights(model, path):
    """Copy the initializers of an ONNX file exported by `export` (BatchNorm folded) into `model` built with
    bn=False: same module names, so the exported weights are the starting point of a fine-tune."""
    import onnx
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    sd = model.state_dict()
    missing = [k for k in sd if k not in init]
    if missing:
        raise SystemExit(f"{path}: no initializer for {missing[:5]} (have {sorted(init)[:8]} ...)")
    model.load_state_dict({k: torch.from_numpy(init[k].copy()).reshape(sd[k].shape) for k in sd})
    return model


def widen(old, new, seed=0, noise=0.01):
    """Net2WiderNet (Chen et al., ICLR 2016) for UNet2D without BatchNorm: load `old`'s weights into the wider `new`
    (same depth and stem, more channels per level) so that `new` computes the same function. Channel c of a widened
    feature map is a copy of old channel m[c] (the old channels in order, then copies drawn at random); the layer
    that produces the map copies that filter (a copy's filter plus `noise` x the layer's weight std, so copies can
    diverge in training), every layer that reads it divides the copied input weights by the number of copies."""
    g = torch.Generator().manual_seed(seed)
    so, sn = old.state_dict(), new.state_dict()
    # (module, feature maps it reads (concatenated in this order), feature map it writes), in the forward's order
    plan, cin, n = [], None, len(old.enc)
    for i in range(n):
        plan += [(f"enc.{i}.0", [cin], f"e{i}a"), (f"enc.{i}.2", [f"e{i}a"], f"e{i}")]
        cin = f"e{i}"
    for k in range(len(old.up)):
        plan += [(f"up.{k}", [cin], f"u{k}"), (f"dec.{k}.0", [f"u{k}", f"e{n - 2 - k}"], f"d{k}a"),
                 (f"dec.{k}.2", [f"d{k}a"], f"d{k}")]
        cin = f"d{k}"
    plan.append(("head", [cin], None))
    maps = {}  # feature map -> (old channel of each new channel, copies of each old channel)
    for name, _, outs in plan:
        if outs is not None:
            n_old, n_new = so[name + ".bias"].shape[0], sn[name + ".bias"].shape[0]
            m = torch.cat([torch.arange(n_old), torch.randint(n_old, (n_new - n_old,), generator=g)])
            maps[outs] = (m, torch.bincount(m, minlength=n_old).float())
    state = {}
    for name, ins, outs in plan:
        w, b = so[name + ".weight"], so[name + ".bias"]
        transposed = name.startswith("up.")  # ConvTranspose2d weights are [in, out, kh, kw]
        if transposed:
            w = w.transpose(0, 1)
        parts, off = [], 0
        for sp in ins:
            if sp is None:  # the network's input: unchanged
                parts.append(w)
                break
            m, cnt = maps[sp]
            k = len(cnt)
            parts.append(w[:, off:off + k][:, m] / cnt[m].view(1, -1, 1, 1))
            off += k
        w = torch.cat(parts, 1)
        if outs is not None:
            m, cnt = maps[outs]
            w, b = w[m].clone(), b[m].clone()
            copies = (torch.arange(len(m)) >= len(cnt)).float().view(-1, 1, 1, 1)
            w += noise * w.std() * torch.randn(w.shape, generator=g) * copies
        if transposed:
            w = w.transpose(0, 1)
        state[name + ".weight"], state[name + ".bias"] = w.contiguous(), b
    new.load_state_dict(state)
    return new


def load_data(d, loaded):
    for f in sorted(glob.glob(os.path.join(d, "case_*.npz"))):
        if f in loaded:
            continue
        try:
            z = np.load(f)
            loaded[f] = (torch.from_numpy(z["x"]), torch.from_numpy(z["y"].astype(np.int64)))
        except Exception as e:  # a file being written
            print("skip", f, e)
    xs = torch.cat([v[0] for v in loaded.values()])
    ys = torch.cat([v[1] for v in loaded.values()])
    return xs, ys


def dice_loss(logits, y):
    p = logits.softmax(1)
    oh = F.one_hot(y, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (p * oh).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + oh.sum((0, 2, 3))
    d = (2 * inter + 1) / (den + 1)
    return 1 - d[1:].mean()


def crop(x, y, size=96):
    """Random size x size crops; a crop around a tumour pixel when the slice has one."""
    b = x.shape[0]
    xo = torch.empty(b, x.shape[1], size, size)
    yo = torch.empty(b, size, size, dtype=y.dtype)
    for n in range(b):
        t = torch.nonzero(y[n] > 0)
        if len(t) and torch.rand(()) < 0.9:
            cj, ci = t[torch.randint(len(t), ())].tolist()
            j0 = int(min(max(cj - torch.randint(16, size - 16, ()).item(), 0), SIZE - size))
            i0 = int(min(max(ci - torch.randint(16, size - 16, ()).item(), 0), SIZE - size))
        else:
            j0, i0 = torch.randint(0, SIZE - size + 1, (2,)).tolist()
        xo[n] = x[n, :, j0:j0 + size, i0:i0 + size]
        yo[n] = y[n, j0:j0 + size, i0:i0 + size]
    return xo, yo


CROP_PROB = 0.0


def augment(x, y):
    if torch.rand(()) < CROP_PROB:
        x, y = crop(x, y)
    if torch.rand(()) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    b, c = x.shape[:2]
    x = x * (1 + 0.1 * torch.randn(b, c, 1, 1)) + 0.1 * torch.randn(b, c, 1, 1)
    x = x + 0.03 * torch.randn_like(x)
    return x, y


def fuse(model):
    """Fold every BatchNorm into the preceding conv (eval mode) for a lean ONNX graph."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            mods = list(m)
            out = []
            i = 0
            while i < len(mods):
                if isinstance(mods[i], nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
                    out.append(fuse_conv_bn_eval(mods[i], mods[i + 1]))
                    i += 2
                else:
                    out.append(mods[i])
                    i += 1
            for k in list(m._modules.keys()):
                del m._modules[k]
            for k, mod in enumerate(out):
                m.add_module(str(k), mod)
    return model


def recalibrate(model, data, cases=40, seed=0):
    """Re-estimate every BatchNorm's running statistics on full 128x128 slices (cumulative average over the
    slices of `cases` random training cases, forward passes only), so eval-mode statistics match what the
    network sees at inference."""
    files = sorted(glob.glob(os.path.join(data, "case_*.npz")))
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    cin = model.enc[0][0].in_channels // (model.stem * model.stem)
    with torch.no_grad():
        for f in rng.choice(files, min(cases, len(files)), replace=False):
            x = torch.from_numpy(np.load(f)["x"].astype(np.float32))
            if cin == 1:  # brain-mask model: every contrast in turn
                x = x.reshape(-1, 1, *x.shape[2:])
            for b in range(0, len(x), 16):
                model(x[b:b + 16])
    model.eval()
    return model


def export(ckpt, onnx_path, opset=17, data=None):
    state = torch.load(ckpt, map_location="cpu")
    model = UNet2D(**ARCHS[state.get("arch", "unet")], bn=state.get("bn", True))
    model.load_state_dict(state["model"])
    if data and state.get("bn", True):
        model = recalibrate(model, data)
    model = fuse(model)
    x = torch.zeros(1, ARCHS[state.get("arch", "unet")].get("cin", 4), SIZE, SIZE)
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=opset, do_constant_folding=True)
    try:
        torch.onnx.export(model, (x,), onnx_path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(model, (x,), onnx_path, **kw)
    import onnx

    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    print("exported", onnx_path, os.path.getsize(onnx_path), "bytes, opset", m.opset_import[0].version,
          "step", state.get("step"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/brats-synth-train")
    ap.add_argument("--minutes", type=float, default=55)
    ap.add_argument("--ckpt", default="/tmp/brats-synth-unet2d.pt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--onnx", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop-prob", type=float, default=0.0, help="fraction of batches trained on 96x96 crops")
    ap.add_argument("--recalibrate", action="store_true", help="export: re-estimate BatchNorm stats on --data")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="unet", help="network (kept in the checkpoint)")
    ap.add_argument("--contrast-weights", default=None,
                    help="one-channel (mask) archs: relative odds of T1,T1CE,T2,FLAIR per slice (default: equal)")
    ap.add_argument("--init-onnx", default=None,
                    help="fine-tune: start from this exported ONNX (BatchNorm folded; the network has no BatchNorm)")
    ap.add_argument("--widen-from", default=None,
                    help="with --arch s2d-wide: start from this s2d ONNX export, widened without changing its function")
    a = ap.parse_args()
    if a.export_only:
        export(a.ckpt, a.onnx, data=a.data if a.recalibrate else None)
        return
    global CROP_PROB
    CROP_PROB = a.crop_prob
    torch.manual_seed(a.seed)
    arch = a.arch
    if a.resume and os.path.exists(a.ckpt):
        arch = torch.load(a.ckpt, map_location="cpu").get("arch", "unet")
    bn = a.init_onnx is None and a.widen_from is None
    if a.resume and os.path.exists(a.ckpt):
        bn = torch.load(a.ckpt, map_location="cpu").get("bn", True)
    model = UNet2D(**ARCHS[arch], bn=bn)
    if a.init_onnx and not a.resume:
        load_onnx_weights(model, a.init_onnx)
        print("initialised from", a.init_onnx, flush=True)
    if a.widen_from and not a.resume:
        narrow = load_onnx_weights(UNet2D(**ARCHS["s2d"], bn=False), a.widen_from)
        widen(narrow, model, seed=a.seed)
        x = torch.randn(2, 4, SIZE, SIZE)
        with torch.no_grad():
            err = float((narrow(x) - model(x)).abs().max())
        print("widened", a.widen_from, "max |logit difference| from it (the copies' noise):", f"{err:.2e}",
              flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    step = 0
    if a.resume and os.path.exists(a.ckpt):
        st = torch.load(a.ckpt, map_location="cpu")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
    print("params", sum(p.numel() for p in model.parameters()), flush=True)
    loaded = {}
    t0 = time.time()
    budget = a.minutes * 60
    last_ck = t0
    gen = torch.Generator().manual_seed(a.seed)
    odds = None
    if a.contrast_weights:
        odds = torch.tensor([float(w) for w in a.contrast_weights.split(",")])
        if odds.numel() != 4 or bool((odds < 0).any()) or float(odds.sum()) <= 0:
            ap.error("--contrast-weights takes four non-negative odds (T1,T1CE,T2,FLAIR), not all zero")
    hist = []
    while time.time() - t0 < budget:
        xs, ys = load_data(a.data, loaded)
        n = xs.shape[0]
        print(f"epoch data: {len(loaded)} cases, {n} slices", flush=True)
        perm = torch.randperm(n, generator=gen)
        for bi in range(0, n - a.batch + 1, a.batch):
            el = time.time() - t0
            if el >= budget:
                break
            lr = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, el / budget))))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[bi:bi + a.batch]
            x = xs[idx].float()
            if ARCHS[arch].get("cin", 4) == 1:  # brain-mask model: a random contrast per slice
                pick = (torch.multinomial(odds, len(idx), replacement=True, generator=gen) if odds is not None
                        else torch.randint(x.shape[1], (len(idx),), generator=gen))
                x = x[torch.arange(len(idx)), pick][:, None]
            x, y = augment(x, ys[idx])
            model.train()
            logits = model(x)
            loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            hist.append(loss.item())
            if step % 50 == 0:
                with torch.no_grad():
                    pred = logits.argmax(1)
                    ds = []
                    for cls in range(1, logits.shape[1]):
                        p, t = pred == cls, y == cls
                        den = p.sum() + t.sum()
                        ds.append(float(2 * (p & t).sum() / den) if den > 0 else float("nan"))
                print(f"step {step} t {el / 60:.1f}m lr {lr:.2e} loss {np.mean(hist[-50:]):.4f} "
                      f"batch dice {'/'.join(f'{v:.3f}' for v in ds)}", flush=True)
            if time.time() - last_ck > 180:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "arch": arch, "bn": bn},
               a.ckpt + ".tmp")
                os.replace(a.ckpt + ".tmp", a.ckpt)
                last_ck = time.time()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "arch": arch, "bn": bn},
               a.ckpt + ".tmp")
    os.replace(a.ckpt + ".tmp", a.ckpt)
    print("done", step, "steps", (time.time() - t0) / 60, "min", flush=True)


if __name__ == "__main__":
    main()
