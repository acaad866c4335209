#!/usr/bin/env python3
"""Convert each series folder of single-frame MR images into one multi-frame Legacy Converted Enhanced MR
image (highdicom; geometry in the functional groups, PS3.3 A.71). IN_DIR OUT_DIR (IN_DIR holds series folders
of uncompressed files). Series Description and Number are kept; new Series/SOP Instance UIDs derived from
the old ones so the conversion is repeatable."""
import hashlib
import os
import sys

import highdicom as hd
import pydicom


def uid(seed: str) -> str:
    return "2.25." + str(int(hashlib.sha256(seed.encode()).hexdigest()[:30], 16))


src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for series in sorted(os.listdir(src)):
    files = sorted(os.listdir(os.path.join(src, series)))
    dss = [pydicom.dcmread(os.path.join(src, series, f)) for f in files]
    first = dss[0]
    img = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=dss,
        series_instance_uid=uid("series" + first.SeriesInstanceUID),
        series_number=int(first.SeriesNumber),
        sop_instance_uid=uid("sop" + first.SeriesInstanceUID),
        instance_number=1,
    )
    img.SeriesDescription = first.SeriesDescription
    img.save_as(os.path.join(dst, series + ".dcm"))
