#!/usr/bin/env python3
"""Read a DICOM-SEG with highdicom and score it against a synthetic study's ground truth.

usage: check_seg.py SEG STUDY_DIR | check_seg.py --same SEG_A SEG_B
STUDY_DIR holds truth/truth.json + truth/labels_ref.u8 ([InstanceNumber-1][row][col]) as written by
models/synth/make_study.py. Segment n of the SEG is taken as label n (segnode's manifest order, 1..3).
Prints one JSON object: Dice for WT (1,2,3), TC (1,3), ET (3), segment labels, frames.
"""
import json
import sys
from pathlib import Path

import highdicom as hd
import numpy as np


def same(a, b):
    """`check_seg.py --same A B`: the two SEGs hold the same masks on the same source frames."""
    import pydicom
    x, y = pydicom.dcmread(a), pydicom.dcmread(b)

    def refs(d):
        return [(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber,
                 f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                for f in d.PerFrameFunctionalGroupsSequence]
    print(json.dumps({
        "same_pixels": x.PixelData == y.PixelData,
        "same_frames": refs(x) == refs(y),
        "same_uid": x.SOPInstanceUID == y.SOPInstanceUID,
        "frames": [int(x.NumberOfFrames), int(y.NumberOfFrames)],
    }))


def main():
    if sys.argv[1] == "--same":
        return same(sys.argv[2], sys.argv[3])
    seg_path, study = Path(sys.argv[1]), Path(sys.argv[2])
    meta = json.loads((study / "truth" / "truth.json").read_text())
    shape = meta["raw_shape"]
    truth = np.fromfile(study / "truth" / meta["raw_file"], dtype=np.uint8).reshape(shape)
    uids = meta["reference_sop_instance_uids"]
    seg = hd.seg.segread(str(seg_path))
    numbers = [int(n) for n in seg.segment_numbers]
    # (slices, rows, cols, segments), one slice per source instance, in the truth's order.
    px = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    labels = np.zeros(truth.shape, np.uint8)
    for i, n in enumerate(numbers):
        labels[px[..., i] > 0] = n

    def dice(ls):
        a, b = np.isin(labels, ls), np.isin(truth, ls)
        s = a.sum() + b.sum()
        return 1.0 if s == 0 else float(2 * (a & b).sum() / s)

    print(json.dumps({
        "WT": dice([1, 2, 3]), "TC": dice([1, 3]), "ET": dice([3]),
        "segments": [seg.get_segment_description(n).segment_label for n in numbers],
        "frames": int(seg.NumberOfFrames),
        "sop_instance_uid": str(seg.SOPInstanceUID),
        "referenced_series": str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
    }))


if __name__ == "__main__":
    main()
