"""Writes a highdicom BINARY SEG from source images and a label volume written by the Rust test.

usage: hd_make.py SRC_DIR NAME.json NAME.labels.raw OUT.dcm
The JSON lists the source frames in label-volume order ({"sop":..., "frame":...}), the shape
(frames, rows, cols) and the number of segments.
"""
import glob
import json
import sys

import highdicom as hd
import numpy as np
import pydicom


def main():
    src_dir, meta_path, raw_path, out = sys.argv[1:5]
    meta = json.load(open(meta_path))
    n, r, c = meta["label_shape"]
    labels = np.fromfile(raw_path, dtype=np.uint16).reshape((n, r, c)).astype(np.uint8)
    by_uid = {}
    for p in glob.glob(f"{src_dir}/*.dcm"):
        ds = pydicom.dcmread(p)
        by_uid[ds.SOPInstanceUID] = ds
    frames = meta["frames"]
    if all(f["frame"] is None for f in frames):
        sources = [by_uid[f["sop"]] for f in frames]
    else:
        # One multi-frame source: highdicom expects the label volume in frame order.
        (sop,) = {f["sop"] for f in frames}
        assert [f["frame"] for f in frames] == list(range(1, n + 1))
        sources = [by_uid[sop]]
    category = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
    types = [
        hd.sr.CodedConcept("6574001", "SCT", "Necrosis"),
        hd.sr.CodedConcept("79654002", "SCT", "Edema"),
        hd.sr.CodedConcept("C113842", "NCIt", "Enhancing Lesion"),
        hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
    ]
    algo = hd.AlgorithmIdentificationSequence(
        name="hd-test", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")
    )
    descs = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=f"seg{k}",
            segmented_property_category=category,
            segmented_property_type=types[k - 1],
            algorithm_type="AUTOMATIC",
            algorithm_identification=algo,
        )
        for k in range(1, meta["nseg"] + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type="BINARY",
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=77,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="highdicom test",
        manufacturer_model_name="hd",
        software_versions=hd.__version__,
        device_serial_number="1",
        omit_empty_frames=True,
    )
    seg.save_as(out)
    print(f"wrote {out}: {seg.NumberOfFrames} frames")


if __name__ == "__main__":
    main()
