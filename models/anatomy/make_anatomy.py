#!/usr/bin/env python3
"""Derive models/anatomy/mni152_2009a_sym_1mm_t1_gm_wm.nii.gz from the MNI ICBM152 2009a files nilearn ships.

Input (PyPI package nilearn, nilearn/datasets/data/):
  mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz   (197x233x189, 1 mm, uint8, brain-extracted T1)
Output: one 4D uint8 NIfTI (volume 0 = T1, 1 = GM probability*255, 2 = WM probability*255), cropped to the
bounding box of the brain plus a 4 voxel margin, affine adjusted so world (MNI RAS mm) coordinates are unchanged.
No resampling, no value change: the voxels are the original ones.

Usage: python models/anatomy/make_anatomy.py [NILEARN_DATA_DIR]
"""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main():
    if len(sys.argv) > 1:
        d = Path(sys.argv[1])
    else:
        import nilearn  # noqa: only to locate the data

        d = Path(nilearn.__file__).parent / "datasets" / "data"
    vols, aff = [], None
    for n in ("t1", "gm", "wm"):
        img = nib.load(d / f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz")
        vols.append(np.asarray(img.dataobj).astype(np.uint8))
        aff = img.affine if aff is None else aff
        assert np.allclose(aff, img.affine)
    stack = np.stack(vols, axis=-1)
    nz = np.argwhere(stack.max(axis=-1) > 0)
    lo = np.maximum(nz.min(0) - 4, 0)
    hi = np.minimum(nz.max(0) + 5, stack.shape[:3])
    crop = stack[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    new_aff = aff.copy()
    new_aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]
    out = nib.Nifti1Image(crop, new_aff)
    out.header.set_data_dtype(np.uint8)
    out.header["descrip"] = b"MNI ICBM152 2009a sym: T1,GM,WM (c) McConnell BIC"
    dst = Path(__file__).parent / "mni152_2009a_sym_1mm_t1_gm_wm.nii.gz"
    nib.save(out, dst)
    print(dst, crop.shape, "offset", lo.tolist())


if __name__ == "__main__":
    main()
