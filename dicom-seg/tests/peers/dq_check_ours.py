"""Checks the NIfTI files dcmqi's segimage2itkimage made from one of our SEGs against the expected masks.

usage: dq_check_ours.py NIFTI_DIR PREFIX DIR NAME
DIR/NAME.json holds the source frames' geometry (positions, iop, ps) and DIR/NAME.masks.raw the expected
masks (segments, frames, rows, cols). Every source pixel is located in patient space and looked up in
the dcmqi output (file PREFIX-<segment number>.nii.gz, value = segment number); pixels outside the
output volume must be 0. Exit 1 on any difference.
"""
import json
import sys

import nibabel as nib
import numpy as np


def main():
    nii_dir, prefix, d, name = sys.argv[1:5]
    meta = json.load(open(f"{d}/{name}.json"))
    shape = meta["shape"]
    expected = np.fromfile(f"{d}/{name}.masks.raw", dtype=np.uint8).reshape(shape)
    nseg, nframes, rows, cols = shape
    iop = np.array(meta["iop"], dtype=float)
    ps = meta["ps"]
    pos = np.array(meta["positions"], dtype=float)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    bad = 0
    for s in range(1, nseg + 1):
        img = nib.load(f"{nii_dir}/{prefix}-{s}.nii.gz")
        data = np.asarray(img.dataobj)
        inv = np.linalg.inv(img.affine)
        for i in range(nframes):
            lps = pos[i][None, None, :] + cc[..., None] * ps[1] * iop[:3] + rr[..., None] * ps[0] * iop[3:]
            ras = lps * np.array([-1.0, -1.0, 1.0])
            vox = ras @ inv[:3, :3].T + inv[:3, 3]
            idx = np.rint(vox).astype(int)
            if np.abs(vox - idx).max() > 0.05:
                print(f"segment {s} frame {i}: source pixels are off the dcmqi grid by {np.abs(vox - idx).max():.3f} voxel")
                sys.exit(1)
            inside = np.all((idx >= 0) & (idx < np.array(data.shape[:3])), axis=-1)
            got = np.zeros((rows, cols), dtype=np.uint8)
            ii = idx[inside]
            got[inside] = (data[ii[:, 0], ii[:, 1], ii[:, 2]] == s).astype(np.uint8)
            diff = int((got != expected[s - 1, i]).sum())
            if diff:
                print(f"segment {s} frame {i}: {diff} pixels differ")
                bad += diff
    if bad:
        sys.exit(1)
    print(f"OK {name}")


if __name__ == "__main__":
    main()
