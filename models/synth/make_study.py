#!/usr/bin/env python3
"""Write one synthetic brain-tumour MR study as DICOM (four MR Image Storage series) plus its ground truth.

    python models/synth/make_study.py --seed 7 --out DIR [--oblique | --orientation sagittal|coronal] [--head]
        [--strong-bias] [--slice-thickness 3] [--size 256]
        [--fov 240] [--transfer-syntax explicit|implicit|rle|jpegls] [--naming scanner|plain]
        [--nifti brats2021|brats2023] [--nifti-4d]

Runs with the test-peer venv (numpy, nibabel, pydicom); compressed transfer syntaxes use dcmtk's dcmcrle /
dcmcjpls (lossless) on the explicit-VR files (RLE falls back to pydicom's encoder when dcmcrle is absent).
Same seed and options -> byte-identical output.

Layout of DIR:
  dicom/<NN>_<CONTRAST>/IM_<NNNN>.dcm     one folder per series (01_T1, 02_T1CE, 03_T2, 04_FLAIR),
                                          instance k+1 = slice k of the stack (increasing along the normal)
  truth/labels.nii.gz                     ground truth on the reference grid as NIfTI (uint8; RAS affine built
                                          from the DICOM geometry; array axes i=column, j=row, k=slice)
  truth/labels_ref.u8                     the same labels as raw uint8 in DICOM order [slice][row][column]
  truth/brain_ref.u8                      ground-truth brain mask (1 = brain: the template brain and the CSF inside
                                          it), raw uint8 in the same order and shape as labels_ref.u8
  truth/truth.json                        reference series (FLAIR) UID, its SOP Instance UIDs in slice order,
                                          shape, geometry, label convention, voxel counts
  study.json                              every series: UIDs, description, contrast, folder
  nifti/<case>/<case><suffix>.nii.gz      with --nifti: the same four images as NIfTI-1 (uint16, the very pixel
                                          values of the DICOM files), BraTS-named: brats2021 -> case
                                          BraTS2021_<seed:05d>, _t1 _t1ce _t2 _flair; brats2023 -> case
                                          BraTS-GLI-<seed:05d>-000, -t1n -t1c -t2w -t2f. Arrays [i=column, j=row,
                                          k=slice]; qform and sform (both code 1, scanner) = Geometry.affine_ras(),
                                          as dcm2niix writes them
  nifti4d/<case>/<case>.nii.gz            with --nifti-4d: one 4D file, volumes in the order FLAIR, T1, T1CE, T2
                                          (the Medical Segmentation Decathlon's BrainTumour order)

Reference series: FLAIR. All four series share one geometry (same Frame of Reference, orientation, positions,
pixel spacing), so the ground truth is on every series' grid; a SEG made on the FLAIR grid can be scored with Dice
against truth/labels_ref.u8 directly.

Labels: 0 background, 1 necrotic core, 2 oedema, 3 enhancing tumour (WT = 1,2,3; TC = 1,3; ET = 3).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"

# contrast -> (series number, scanner-style description, plain description, acquisition parameters)
SERIES = {
    "T1": (1, "AX T1 SE", "T1",
           dict(ScanningSequence="SE", SequenceVariant="NONE", RepetitionTime=550.0, EchoTime=12.0, FlipAngle=90,
                EchoTrainLength=1, SequenceName="se2d1")),
    "T1CE": (2, "AX T1 SE POST-CONTRAST", "T1CE",
             dict(ScanningSequence="SE", SequenceVariant="NONE", RepetitionTime=550.0, EchoTime=12.0, FlipAngle=90,
                  EchoTrainLength=1, SequenceName="se2d1", ContrastBolusAgent="GADOBUTROL 1.0 MMOL/ML",
                  ContrastBolusRoute="IV", ContrastBolusVolume=7.5)),
    "T2": (3, "AX T2 TSE", "T2",
           dict(ScanningSequence="SE", SequenceVariant="SK", RepetitionTime=4500.0, EchoTime=95.0, FlipAngle=150,
                EchoTrainLength=15, SequenceName="tse2d1_15")),
    "FLAIR": (4, "AX T2 FLAIR", "FLAIR",
              dict(ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP"], RepetitionTime=9000.0,
                   EchoTime=85.0, InversionTime=2500.0, FlipAngle=150, EchoTrainLength=16,
                   SequenceName="tir2d1_16")),
}


def uid(*parts) -> str:
    """Deterministic UUID-derived UID (2.25.<128-bit integer>) from the seed and a role."""
    h = hashlib.sha256("/".join(["segnode-synth", *[str(p) for p in parts]]).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


# row_dir, col_dir, normal (columns) of the plain sagittal and coronal stacks, as scanners write them
PLANES = {
    "sagittal": np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T,
    "coronal": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float).T,
}


def study_geometry(cs: synth.Case, rng, size, fov, thickness, oblique, coverage=170.0, orientation=None):
    """oblique: the axial stack tilted 12-25 deg (seeded); orientation "sagittal"/"coronal": a plain stack in that
    plane (no random draw, so the centre draw below stays the same as for the axial stack)."""
    if orientation in PLANES:
        rm = PLANES[orientation]
    else:
        if oblique:
            ang = np.deg2rad([rng.choice([-1, 1]) * rng.uniform(12, 25), rng.uniform(-10, 10), rng.uniform(-6, 6)])
        else:
            ang = np.zeros(3)
        rm = synth.rotation(*ang)
    n = int(np.ceil(coverage / thickness))
    centre = cs.centre_subject + rng.uniform(-5, 5, 3)
    px = fov / size
    return synth.Geometry.centred(rm, centre, size, size, px, px, n, thickness, thickness)


def ds_fmt(v, nd=6):
    return float(f"{float(v):.{nd}f}")


def write_series(out_dir: Path, arr, geom: synth.Geometry, con, study, seed, naming, plane="AX"):
    num, desc_scanner, desc_plain, acq = SERIES[con]
    desc = desc_scanner if naming == "scanner" else desc_plain
    if naming == "scanner" and plane != "AX":
        desc = plane + desc[2:]
    series_uid = uid(seed, "series", con)
    out_dir.mkdir(parents=True, exist_ok=True)
    sop_uids = []
    lo, hi = np.percentile(arr[arr > 0], [1, 99.5]) if (arr > 0).any() else (0, 1)
    for k in range(geom.slices):
        sop = uid(seed, "sop", con, k)
        sop_uids.append(sop)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1447.1"  # fixed: reproducible bytes
        meta.ImplementationVersionName = "SEGNODE_SYNTH1"
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.InstanceCreationDate = study["date"]
        ds.InstanceCreationTime = study["time"]
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"]
        ds.StudyTime = study["time"]
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{int(study['time'][:2]):02d}{10 + num:02d}00"
        ds.AccessionNumber = f"SYN{seed:07d}"
        ds.Modality = "MR"
        ds.Manufacturer = "segnode synthetic"
        ds.InstitutionName = "segnode synthetic data"
        ds.ReferringPhysicianName = ""
        ds.StationName = "SYNTH01"
        ds.StudyDescription = "MR BRAIN WITH AND WITHOUT CONTRAST (SYNTHETIC)"
        ds.SeriesDescription = desc
        ds.ManufacturerModelName = "make_study.py"
        ds.PatientName = f"SYNTHETIC^CASE{seed:04d}"
        ds.PatientID = f"SYN-{seed:06d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.PatientAge = "056Y"
        ds.BodyPartExamined = "BRAIN"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthetic data: no real patient"
        for key, val in acq.items():
            setattr(ds, key, val)
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = ds_fmt(geom.slice_thickness)
        ds.SpacingBetweenSlices = ds_fmt(geom.slice_spacing)
        ds.NumberOfAverages = 1
        ds.ImagingFrequency = 127.74
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = 3.0
        ds.PercentSampling = 100
        ds.PercentPhaseFieldOfView = 100
        ds.PixelBandwidth = 200
        ds.SoftwareVersions = "segnode-synth 1"
        ds.ProtocolName = desc
        ds.AcquisitionMatrix = [0, geom.cols, geom.rows, 0]
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study["uid"]
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = num
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ds_fmt(x) for x in geom.slice_position(k)]
        ds.ImageOrientationPatient = [ds_fmt(x) for x in np.r_[geom.row_dir, geom.col_dir]]
        ds.FrameOfReferenceUID = study["for"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = ds_fmt(np.dot(geom.slice_position(k), geom.normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = geom.rows
        ds.Columns = geom.cols
        ds.PixelSpacing = [ds_fmt(geom.row_spacing), ds_fmt(geom.col_spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = ds_fmt((lo + hi) / 2, 1)
        ds.WindowWidth = ds_fmt(hi - lo, 1)
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PixelData = arr[k].astype("<u2").tobytes()
        ds.file_meta.FileMetaInformationGroupLength = 0
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(out_dir / f"IM_{k + 1:04d}.dcm", ds, enforce_file_format=True)
    return series_uid, sop_uids, desc


def transcode(folder: Path, ts: str):
    files = sorted(folder.glob("*.dcm"))
    if ts == "explicit":
        return
    for f in files:
        if ts == "implicit":
            ds = pydicom.dcmread(f)
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            pydicom.dcmwrite(f, ds, enforce_file_format=True, implicit_vr=True, little_endian=True)
        elif ts == "rle" and shutil.which("dcmcrle"):
            tmp = f.with_suffix(".tmp")
            subprocess.run(["dcmcrle", "--uid-never", str(f), str(tmp)], check=True)
            tmp.replace(f)
        elif ts == "rle":
            ds = pydicom.dcmread(f)
            ds.compress(RLE_LOSSLESS, encoding_plugin="pydicom")
            pydicom.dcmwrite(f, ds, enforce_file_format=True)
        elif ts == "jpegls":
            tmp = f.with_suffix(".tmp")
            subprocess.run(["dcmcjpls", "--uid-never", str(f), str(tmp)], check=True)
            tmp.replace(f)
        else:
            raise SystemExit(f"unknown transfer syntax {ts}")


NIFTI_NAMING = {
    "brats2021": ("BraTS2021_{seed:05d}", "_", {"T1": "t1", "T1CE": "t1ce", "T2": "t2", "FLAIR": "flair"}),
    "brats2023": ("BraTS-GLI-{seed:05d}-000", "-", {"T1": "t1n", "T1CE": "t1c", "T2": "t2w", "FLAIR": "t2f"}),
}
MSD_ORDER = ("FLAIR", "T1", "T1CE", "T2")


def nifti_image(arr, affine):
    """A uint16 NIfTI-1 image of arr ([k, j, i] or [k, j, i, channel]) stored as [i, j, k(, channel)], with qform and
    sform both = affine (code 1, scanner), as dcm2niix writes them."""
    axes = (2, 1, 0) + tuple(range(3, arr.ndim))
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(axes)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_data_dtype(np.uint16)
    return img


def write_nifti(out: Path, imgs: dict, geom, seed: int, naming: str, four_d: bool):
    """The study's four images (uint16 [k, j, i]) as NIfTI files; see the module docstring."""
    pattern, sep, suffix = NIFTI_NAMING[naming]
    case = pattern.format(seed=seed)
    aff = geom.affine_ras()
    for sub, files in (("nifti", {f"{case}{sep}{suffix[c]}.nii.gz": imgs[c] for c in imgs}),
                       ("nifti4d", {f"{case}.nii.gz": np.stack([imgs[c] for c in MSD_ORDER], axis=-1)} if four_d
                        else {})):
        if not files:
            continue
        d = out / sub / case
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for name, arr in files.items():
            nib.save(nifti_image(arr, aff), d / name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--oblique", action="store_true", help="tilt the slice stack 12-25 deg (random, seeded)")
    ap.add_argument("--orientation", default="axial", choices=["axial", "sagittal", "coronal"],
                    help="plane of the stack (--oblique tilts an axial stack)")
    ap.add_argument("--head", action="store_true",
                    help="a head with skull, scalp, eyes, sinuses and neck around the brain (synth/head.py)")
    ap.add_argument("--strong-bias", action="store_true", help="strong bias fields (head cases: else weak)")
    ap.add_argument("--slice-thickness", type=float, default=3.0, help="mm; also Spacing Between Slices")
    ap.add_argument("--size", type=int, default=256, help="rows = columns")
    ap.add_argument("--fov", type=float, default=240.0, help="in-plane field of view in mm")
    ap.add_argument("--coverage", type=float, default=170.0, help="extent along the slice normal in mm")
    ap.add_argument("--transfer-syntax", default="explicit", choices=["explicit", "implicit", "rle", "jpegls"])
    ap.add_argument("--naming", default="scanner", choices=["scanner", "plain"],
                    help="scanner: 'AX T1 SE', 'AX T1 SE POST-CONTRAST', 'AX T2 TSE', 'AX T2 FLAIR'; "
                         "plain: 'T1', 'T1CE', 'T2', 'FLAIR'")
    ap.add_argument("--nifti", choices=["brats2021", "brats2023"],
                    help="also write the four images as BraTS-named NIfTI files under nifti/<case>/")
    ap.add_argument("--nifti-4d", action="store_true",
                    help="also write one 4D NIfTI file (FLAIR, T1, T1CE, T2) under nifti4d/<case>/")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if (out / "dicom").exists():
        shutil.rmtree(out / "dicom")
    out.mkdir(parents=True, exist_ok=True)
    if a.oblique and a.orientation != "axial":
        raise SystemExit("--oblique tilts an axial stack; leave --orientation axial")
    strong = True if a.strong_bias else (False if a.head else None)
    cs = synth.make_case(a.seed, head=a.head, strong_bias=strong)
    rng = np.random.default_rng([a.seed, 11])
    geom = study_geometry(cs, rng, a.size, a.fov, a.slice_thickness, a.oblique, a.coverage, a.orientation)
    imgs, lab, brain = synth.render(cs, geom, with_brain=True)
    plane = {"axial": "AX", "sagittal": "SAG", "coronal": "COR"}[a.orientation]
    study = dict(uid=uid(a.seed, "study"), **{"for": uid(a.seed, "for")},
                 date=f"2026{1 + a.seed % 12:02d}{1 + a.seed % 28:02d}", time=f"{8 + a.seed % 10:02d}0000")
    series = []
    ref = None
    for con in synth.CONTRASTS:
        num = SERIES[con][0]
        folder = out / "dicom" / f"{num:02d}_{con}"
        suid, sops, desc = write_series(folder, imgs[con].astype(np.uint16), geom, con, study, a.seed, a.naming,
                                        plane)
        transcode(folder, a.transfer_syntax)
        series.append(dict(contrast=con, series_number=num, series_instance_uid=suid, series_description=desc,
                           folder=str(folder.relative_to(out)), instances=len(sops)))
        if con == "FLAIR":
            ref = (suid, sops, str(folder.relative_to(out)))
    if a.nifti or a.nifti_4d:
        write_nifti(out, {con: imgs[con].astype(np.uint16) for con in synth.CONTRASTS}, geom, a.seed,
                    a.nifti or "brats2021", a.nifti_4d)
    tdir = out / "truth"
    tdir.mkdir(exist_ok=True)
    nif = nib.Nifti1Image(np.ascontiguousarray(lab.transpose(2, 1, 0)), geom.affine_ras())
    nif.header.set_data_dtype(np.uint8)
    nif.header["descrip"] = b"labels 0 bg 1 necrotic 2 oedema 3 enhancing"
    nib.save(nif, tdir / "labels.nii.gz")
    lab.astype(np.uint8).tofile(tdir / "labels_ref.u8")
    brain.astype(np.uint8).tofile(tdir / "brain_ref.u8")
    counts = np.bincount(lab.ravel(), minlength=4).tolist()
    vox = geom.row_spacing * geom.col_spacing * geom.slice_spacing
    truth = dict(
        labels={"0": "background", "1": "necrotic core", "2": "oedema", "3": "enhancing tumour"},
        regions={"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]},
        reference_contrast="FLAIR", reference_series_instance_uid=ref[0], reference_folder=ref[2],
        reference_sop_instance_uids=ref[1],
        raw_file="labels_ref.u8", raw_dtype="uint8", raw_shape=[geom.slices, geom.rows, geom.cols],
        raw_order="[slice k = InstanceNumber-1][row][column]",
        nifti_file="labels.nii.gz",
        brain_file="brain_ref.u8", brain_ml=round(float(brain.sum()) * geom.row_spacing * geom.col_spacing
                                                  * geom.slice_spacing / 1000.0, 2),
        head=bool(a.head),
        voxel_counts=counts, volumes_ml={k: round(v * vox / 1000.0, 2) for k, v in
                                         zip(["background", "necrotic", "oedema", "enhancing"], counts)},
        geometry=dict(image_orientation_patient=np.r_[geom.row_dir, geom.col_dir].round(6).tolist(),
                      first_image_position_patient=geom.position.round(6).tolist(),
                      pixel_spacing=[geom.row_spacing, geom.col_spacing], slice_spacing=geom.slice_spacing,
                      slice_thickness=geom.slice_thickness),
    )
    (tdir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    meta = dict(seed=a.seed, generator="models/synth/make_study.py", options=vars(a), study_instance_uid=study["uid"],
                frame_of_reference_uid=study["for"], patient_id=f"SYN-{a.seed:06d}", series=series,
                transfer_syntax=a.transfer_syntax)
    (out / "study.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(dict(out=str(out), slices=geom.slices, counts=counts, oblique=a.oblique)))


if __name__ == "__main__":
    main()
