"""Times highdicom's Segmentation constructor on the sources and label volume written by bench_encode.

usage: bench_highdicom.py DIR [REPS]   (DIR/src/*.dcm, DIR/labels.raw, 155x240x240 uint16)
Prints key=value lines; the first (cold) run is excluded from the median.
"""
import glob
import io
import statistics
import sys
import time

import highdicom as hd
import numpy as np
import pydicom


def main():
    d = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    sources = [pydicom.dcmread(p) for p in sorted(glob.glob(f"{d}/src/*.dcm"))]
    n, r, c = len(sources), sources[0].Rows, sources[0].Columns
    labels = np.fromfile(f"{d}/labels.raw", dtype=np.uint16).reshape((n, r, c)).astype(np.uint8)
    category = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
    types = [
        hd.sr.CodedConcept("6574001", "SCT", "Necrosis"),
        hd.sr.CodedConcept("79654002", "SCT", "Edema"),
        hd.sr.CodedConcept("C113842", "NCIt", "Enhancing Lesion"),
        hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
    ]
    algo = hd.AlgorithmIdentificationSequence(
        name="bench", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")
    )
    descs = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=t.meaning,
            segmented_property_category=category,
            segmented_property_type=t,
            algorithm_type="AUTOMATIC",
            algorithm_identification=algo,
        )
        for k, t in enumerate(types)
    ]

    def build():
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=labels,
            segmentation_type="BINARY",
            segment_descriptions=descs,
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="bench",
            manufacturer_model_name="bench",
            software_versions="0",
            device_serial_number="0",
            omit_empty_frames=True,
        )

    seg = build()  # cold
    ctor, with_save = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        seg = build()
        t1 = time.perf_counter()
        buf = io.BytesIO()
        seg.save_as(buf)
        t2 = time.perf_counter()
        ctor.append(t1 - t0)
        with_save.append(t2 - t0)
    print(f"hd_frames={seg.NumberOfFrames}")
    print(f"hd_ctor_median_s={statistics.median(ctor):.6f}")
    print(f"hd_ctor_min_s={min(ctor):.6f}")
    print(f"hd_ctor_save_median_s={statistics.median(with_save):.6f}")
    seg.save_as(f"{d}/highdicom.seg.dcm")


if __name__ == "__main__":
    main()
