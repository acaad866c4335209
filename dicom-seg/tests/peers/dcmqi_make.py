"""Writes a dcmqi SEG (itkimage2segimage) from a label volume written by the Rust test.

usage: dcmqi_make.py SRC_DIR NAME.json NAME.labels.raw ITKIMAGE2SEGIMAGE OUT.dcm WORK_DIR
The JSON gives the source geometry (orientation, pixel spacing, per-frame positions, the order of
frames along the normal) so the label volume can be written as a NIfTI on exactly the source grid.
"""
import json
import subprocess
import sys

import nibabel as nib
import numpy as np


def main():
    src_dir, meta_path, raw_path, tool, out, work = sys.argv[1:7]
    meta = json.load(open(meta_path))
    n, r, c = meta["label_shape"]
    labels = np.fromfile(raw_path, dtype=np.uint16).reshape((n, r, c))
    order = meta["order"]  # source frame indices sorted along the normal
    iop = np.array(meta["iop"], dtype=float)
    ps = meta["ps"]  # between rows, between columns
    pos = np.array(meta["positions"], dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    p0 = pos[order[0]]
    step = (pos[order[-1]] - p0) / (n - 1)
    # LPS affine of voxel (i=column, j=row, k=slice along the normal).
    lps = np.eye(4)
    lps[:3, 0] = row_dir * ps[1]
    lps[:3, 1] = col_dir * ps[0]
    lps[:3, 2] = step
    lps[:3, 3] = p0
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    vol = np.transpose(labels[order], (2, 1, 0)).astype(np.uint16)  # (cols, rows, slices)
    img = nib.Nifti1Image(vol, ras)
    img.set_sform(ras, code=1)
    img.set_qform(ras, code=1)
    nii = f"{work}/labels.nii.gz"
    nib.save(img, nii)
    colours = [[255, 255, 0], [0, 255, 0], [255, 0, 0], [0, 128, 255]]
    types = [
        ("6574001", "SCT", "Necrosis"),
        ("79654002", "SCT", "Edema"),
        ("C113842", "NCIt", "Enhancing Lesion"),
        ("108369006", "SCT", "Neoplasm"),
    ]
    attrs = []
    for k in range(1, meta["nseg"] + 1):
        v, s, m = types[k - 1]
        attrs.append(
            {
                "labelID": k,
                "SegmentLabel": f"dcmqi{k}",
                "SegmentDescription": m,
                "SegmentAlgorithmType": "AUTOMATIC",
                "SegmentAlgorithmName": "dcmqi-test",
                "SegmentedPropertyCategoryCodeSequence": {
                    "CodeValue": "49755003",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Morphologically abnormal structure",
                },
                "SegmentedPropertyTypeCodeSequence": {"CodeValue": v, "CodingSchemeDesignator": s, "CodeMeaning": m},
                "recommendedDisplayRGBValue": colours[k - 1],
            }
        )
    seg_meta = {
        "ContentCreatorName": "Test^Dcmqi",
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "dcmqi segmentation",
        "SeriesNumber": "78",
        "InstanceNumber": "1",
        "segmentAttributes": [attrs],
        "ContentLabel": "DCMQI",
        "ContentDescription": "dcmqi test",
        "ClinicalTrialCoordinatingCenterName": "test",
    }
    mpath = f"{work}/meta.json"
    json.dump(seg_meta, open(mpath, "w"))
    cmd = [tool, "--inputImageList", nii, "--inputDICOMDirectory", src_dir, "--outputDICOM", out, "--inputMetadata", mpath]
    res = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(res.stdout[-4000:])
    sys.stderr.write(res.stderr[-4000:])
    sys.exit(res.returncode)


if __name__ == "__main__":
    main()
