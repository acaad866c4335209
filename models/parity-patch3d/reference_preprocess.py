#!/usr/bin/env python3
"""MONAI's preprocessing chain on a DICOM study converted to NIfTI, for the canonical-grid parity test
(segmenter/tests/integration/patch3d_parity.rs). Runs in `.venv-ref` (monai==1.6.1, nibabel); the conversion is
dcm2niix's (Debian package, scripts/install-test-deps.sh).

For each series folder (in channel order): dcm2niix -> NIfTI; then, as MONAI bundles write it,
    LoadImage(ensure_channel_first) -> Orientation(axcodes) -> Spacing(pixdim, bilinear, border)
and, over the stacked channels, NormalizeIntensity(nonzero=True, channel_wise=True).
Writes OUT/canonical.f32 (raw little-endian float32 [C, X, Y, Z]) and OUT/canonical.json (shape, affine).
"""
import argparse
import glob
import json
import os
import subprocess

import numpy as np
import torch
from monai.transforms import LoadImage, NormalizeIntensity, Orientation, Spacing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", nargs="+", required=True, help="DICOM series folders, channel order")
    ap.add_argument("--axcodes", default="RAS")
    ap.add_argument("--pixdim", required=True, help="e.g. 2.5,3,3.5")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pixdim = [float(x) for x in args.pixdim.split(",")]
    os.makedirs(args.out, exist_ok=True)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    orient = Orientation(axcodes=args.axcodes)
    spacing = Spacing(pixdim=pixdim, mode="bilinear", padding_mode="border")
    chans, affine = [], None
    for n, folder in enumerate(args.series):
        nii_dir = os.path.join(args.out, f"nii{n}")
        os.makedirs(nii_dir, exist_ok=True)
        subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "ch", "-o", nii_dir, folder],
                       check=True, stdout=subprocess.DEVNULL)
        files = glob.glob(os.path.join(nii_dir, "*.nii"))
        assert len(files) == 1, files
        img = spacing(orient(load(files[0])))
        chans.append(img[0].as_tensor().to(torch.float32))
        affine = img.affine.numpy().tolist()
    x = torch.stack(chans)
    x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
    x = np.ascontiguousarray(x.numpy(), dtype="<f4")
    x.tofile(os.path.join(args.out, "canonical.f32"))
    with open(os.path.join(args.out, "canonical.json"), "w") as f:
        json.dump({"shape": list(x.shape), "affine": affine}, f)
    print("canonical", x.shape)


if __name__ == "__main__":
    main()
