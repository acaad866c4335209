#!/usr/bin/env python3
"""Re-encode DICOM files as JPEG 2000 lossless (dcmtk 3.6.7 has no J2K encoder). IN_DIR OUT_DIR"""
import os
import sys

import pydicom
from pydicom.uid import JPEG2000Lossless

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    ds = pydicom.dcmread(os.path.join(src, name))
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)  # a twin: same UIDs, like dcmtk
    ds.save_as(os.path.join(dst, name), enforce_file_format=True)
