"""Reads SEGs written by dicom-seg with highdicom and checks they hold exactly the expected masks.

usage: hd_read_ours.py DIR NAME...   (DIR/NAME.seg.dcm, DIR/NAME.json, DIR/NAME.masks.raw)
Prints one line per SEG ("OK name ..." or "FAIL name: why") and exits 1 if any failed.
"""
import json
import sys

import highdicom as hd
import numpy as np


def check(d, name):
    meta = json.load(open(f"{d}/{name}.json"))
    shape = meta["shape"]  # segments, frames, rows, cols
    expected = np.fromfile(f"{d}/{name}.masks.raw", dtype=np.uint8).reshape(shape)
    seg = hd.seg.segread(f"{d}/{name}.seg.dcm")
    nseg = shape[0]
    numbers = list(range(1, nseg + 1))
    if sorted(seg.segment_numbers) != numbers:
        return f"segment numbers {seg.segment_numbers} != {numbers}"
    frames = meta["frames"]
    kw = dict(
        segment_numbers=numbers,
        combine_segments=False,
        assert_missing_frames_are_empty=True,
        rescale_fractional=False,
    )
    if all(f["frame"] is None for f in frames):
        arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=[f["sop"] for f in frames], **kw)
    else:
        sops = {f["sop"] for f in frames}
        if len(sops) != 1:
            return "multi-frame case with several source instances is not supported by this checker"
        arr = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sops.pop(), source_frame_numbers=[f["frame"] for f in frames], **kw
        )
    got = np.moveaxis(np.asarray(arr), -1, 0).astype(np.uint8)
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    if not np.array_equal(got, expected):
        diff = np.argwhere(got != expected)
        return f"{len(diff)} voxels differ, first at {diff[0].tolist()}"
    # Segment metadata as a viewer would show it.
    for s in meta.get("segments", []):
        desc = seg.get_segment_description(s["number"])
        if desc.segment_label != s["label"]:
            return f"segment {s['number']} label {desc.segment_label!r} != {s['label']!r}"
        t = desc.segmented_property_type
        if [t.value, t.scheme_designator, t.meaning] != s["type"]:
            return f"segment {s['number']} type {t} != {s['type']}"
        c = desc.segmented_property_category
        if c.scheme_designator != "SCT":
            return f"segment {s['number']} category scheme {c.scheme_designator}"
        want = list(hd.color.CIELabColor.from_rgb(*s["rgb"]).value)
        have = [int(v) for v in desc.RecommendedDisplayCIELabValue]
        if have != want:
            return f"segment {s['number']} CIELab {have} != highdicom's {want}"
        if desc.algorithm_type.value != "AUTOMATIC":
            return f"segment {s['number']} algorithm type {desc.algorithm_type}"
    return None


def main():
    d, names = sys.argv[1], sys.argv[2:]
    failed = 0
    for name in names:
        try:
            why = check(d, name)
        except Exception as e:  # report, do not stop at the first
            why = f"{type(e).__name__}: {e}"
        if why:
            failed += 1
            print(f"FAIL {name}: {why}")
        else:
            print(f"OK {name}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
