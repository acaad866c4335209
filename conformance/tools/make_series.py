#!/usr/bin/env python3
"""Write a deterministic synthetic multi-slice MR series (MR Image Storage, explicit VR LE).

No patient data: a phantom of concentric ellipses whose intensity varies by slice.
Usage: make_series.py OUT_DIR [--slices N] [--size N] [--study-uid UID] [--series N] [--seed S]
"""
import argparse
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

ROOT = "1.2.826.0.1.3680043.10.1511."  # arc for segnode test objects


def uid(*parts):
    return ROOT + ".".join(str(p) for p in parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--series", type=int, default=1, help="number of series in the study")
    ap.add_argument("--study-uid", default=None)
    ap.add_argument("--bits", type=int, choices=(8, 12), default=12, help="8 for JPEG baseline inputs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    study_uid = args.study_uid or uid(1, args.seed)
    n = args.size
    yy, xx = np.mgrid[0:n, 0:n]
    for s in range(args.series):
        series_uid = f"{study_uid}.{s + 1}"
        for z in range(args.slices):
            r = np.hypot((xx - n / 2) / (0.4 * n), (yy - n / 2) / (0.45 * n))
            img = (np.clip(1.0 - r, 0, 1) * (800 + 20 * z) + rng.normal(0, 10, (n, n))).clip(0, 4095)
            img = (img / 16).astype(np.uint8) if args.bits == 8 else img.astype(np.uint16)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            sop_uid = f"{series_uid}.{z + 1}"
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = study_uid + ".0"
            ds.PatientName = "PHANTOM^SEGNODE"
            ds.PatientID = f"PHANTOM{args.seed}"
            ds.PatientBirthDate = ""
            ds.PatientSex = "O"
            ds.StudyDate = "20260101"
            ds.StudyTime = "120000"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyID = "1"
            ds.Modality = "MR"
            ds.SeriesNumber = s + 1
            ds.SeriesDescription = ["FLAIR", "T1", "T1CE", "T2"][s % 4]
            ds.InstanceNumber = z + 1
            ds.ImagePositionPatient = [-n / 2, -n / 2, float(z * 3)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [1, 1]
            ds.SliceThickness = 3
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = 10
            ds.RepetitionTime = 500
            ds.EchoTrainLength = 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.Laterality = ""
            ds.PatientPosition = "HFS"
            ds.PositionReferenceIndicator = ""
            ds.Manufacturer = "segnode-test"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = n
            ds.Columns = n
            ds.BitsAllocated = 8 if args.bits == 8 else 16
            ds.BitsStored = args.bits
            ds.HighBit = args.bits - 1
            ds.PixelRepresentation = 0
            ds.PixelData = img.tobytes()
            pydicom.dcmwrite(os.path.join(args.out, f"s{s + 1:02d}_{z + 1:04d}.dcm"), ds, enforce_file_format=True)


if __name__ == "__main__":
    main()
