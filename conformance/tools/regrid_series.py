#!/usr/bin/env python3
"""Resample one uncompressed single-frame MR series onto another grid, as a scanner acquiring that contrast
with other parameters would: new pixel spacing, slice spacing/thickness, matrix and an offset origin, same
orientation and Frame of Reference. Trilinear interpolation in patient coordinates, 0 outside.

usage: regrid_series.py IN_DIR OUT_DIR --pixel MM --slice MM --size N --shift MM
New Series/SOP Instance UIDs are derived from the old ones (repeatable)."""
import argparse
import copy
import hashlib
import os

import numpy as np
import pydicom


def uid(seed):
    return "2.25." + str(int(hashlib.sha256(seed.encode()).hexdigest()[:30], 16))


ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("dst")
ap.add_argument("--pixel", type=float, required=True)
ap.add_argument("--slice", type=float, required=True)
ap.add_argument("--size", type=int, required=True)
ap.add_argument("--shift", type=float, default=0.0)
a = ap.parse_args()

dss = [pydicom.dcmread(os.path.join(a.src, f)) for f in sorted(os.listdir(a.src))]
iop = np.array(dss[0].ImageOrientationPatient, float)
r, c = iop[:3], iop[3:]
n = np.cross(r, c)
dss.sort(key=lambda d: float(np.dot(n, np.array(d.ImagePositionPatient, float))))
vol = np.stack([d.pixel_array.astype(np.float64) * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0)) for d in dss])
K, R, C = vol.shape
ps = [float(x) for x in dss[0].PixelSpacing]  # [row spacing, col spacing]
p0 = np.array(dss[0].ImagePositionPatient, float)
step = float(np.dot(n, np.array(dss[1].ImagePositionPatient, float) - p0))
# Centre of the old volume, kept (plus the shift along row, column and normal).
centre = p0 + (C - 1) / 2 * ps[1] * r + (R - 1) / 2 * ps[0] * c + (K - 1) / 2 * step * n
extent = (K - 1) * step
K2 = int(extent // a.slice) + 1
new0 = centre + a.shift * (r + c + n) - (a.size - 1) / 2 * a.pixel * (r + c) - (K2 - 1) / 2 * a.slice * n


os.makedirs(a.dst, exist_ok=True)
series_uid = uid("series" + dss[0].SeriesInstanceUID + a.dst)
jj, ii = np.meshgrid(np.arange(a.size), np.arange(a.size), indexing="ij")
for k in range(K2):
    origin = new0 + k * a.slice * n
    pts = origin[None, None, :] + ii[..., None] * a.pixel * r + jj[..., None] * a.pixel * c
    flat = pts.reshape(-1, 3)
    d = flat - p0
    # Continuous (slice, row, column) index in the old series; trilinear, 0 outside.
    kk, jj2, ii2 = d @ n / step, d @ c / ps[0], d @ r / ps[1]
    ds = copy.deepcopy(dss[0])
    vals = np.zeros(len(flat))
    ok = (kk >= 0) & (kk <= K - 1) & (jj2 >= 0) & (jj2 <= R - 1) & (ii2 >= 0) & (ii2 <= C - 1)
    k0 = np.clip(np.floor(kk), 0, K - 2).astype(int)
    j0 = np.clip(np.floor(jj2), 0, R - 2).astype(int)
    i0 = np.clip(np.floor(ii2), 0, C - 2).astype(int)
    fk, fj, fi = kk - k0, jj2 - j0, ii2 - i0
    acc = np.zeros(len(flat))
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                w = (fk if dk else 1 - fk) * (fj if dj else 1 - fj) * (fi if di else 1 - fi)
                acc += w * vol[np.minimum(k0 + dk, K - 1), np.minimum(j0 + dj, R - 1), np.minimum(i0 + di, C - 1)]
    vals[ok] = acc[ok]
    px = np.clip(np.rint(vals), 0, 65535).astype(np.uint16).reshape(a.size, a.size)
    ds.Rows = ds.Columns = a.size
    ds.PixelSpacing = [f"{a.pixel:.6g}", f"{a.pixel:.6g}"]
    ds.SliceThickness = f"{a.slice:.6g}"
    ds.SpacingBetweenSlices = f"{a.slice:.6g}"
    ds.ImagePositionPatient = [f"{x:.6f}" for x in origin]
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = uid(series_uid + str(k))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = k + 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for tag in ("RescaleSlope", "RescaleIntercept", "SliceLocation", "LargestImagePixelValue", "SmallestImagePixelValue", "WindowCenter", "WindowWidth"):
        if tag in ds:
            delattr(ds, tag)
    ds.PixelData = px.tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(os.path.join(a.dst, f"{k + 1:04d}.dcm"), enforce_file_format=True)
