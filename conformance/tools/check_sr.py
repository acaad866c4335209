#!/usr/bin/env python3
"""Read segnode's volume report (TID 1500 SR) with highdicom and check it against the SEG it describes.

usage: check_sr.py SR SEG
For every Volumetric ROI measurement group highdicom finds: the tracking identifier, the volume and
its unit, the finding, the referenced SEG SOP Instance UID and segment numbers (read from the content
item, since a BraTS region references several), and the volume recomputed from the SEG's own pixels
(voxel count of those segments x the SEG's pixel measures). Prints one JSON object.
"""
import json
import sys

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes


def seg_volumes(seg_ds):
    """ml per segment number, from the SEG's frames and Pixel Measures."""
    seg = hd.seg.Segmentation.from_dataset(seg_ds, copy=False)
    pm = seg_ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    dy, dx = (float(v) for v in pm.PixelSpacing)
    dz = float(getattr(pm, "SpacingBetweenSlices", pm.SliceThickness))
    voxel_ml = dx * dy * dz / 1000.0
    out = {}
    for n in seg.segment_numbers:
        # Count set pixels over every frame of segment n (frames do not overlap: one per source slice).
        frames = [i for i, f in enumerate(seg_ds.PerFrameFunctionalGroupsSequence)
                  if int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == int(n)]
        arr = seg_ds.pixel_array
        if arr.ndim == 2:
            arr = arr[None]
        out[int(n)] = int(arr[frames].astype(bool).sum()) * voxel_ml if frames else 0.0
    return out


def algorithm(measurement):
    """(Algorithm Name, Algorithm Version) under the NUM item (TID 4019)."""
    num = measurement if hasattr(measurement, "ContentSequence") else measurement[0]
    found = {it.ConceptNameCodeSequence[0].CodeValue: it.TextValue
             for it in getattr(num, "ContentSequence", []) if it.ValueType == "TEXT"}
    return [found.get("111001"), found.get("111003")]


def main():
    sr_path, seg_path = sys.argv[1], sys.argv[2]
    seg_ds = pydicom.dcmread(seg_path)
    sr = hd.sr.srread(sr_path)
    report = sr.content
    per_segment = seg_volumes(seg_ds)
    known = {int(s.SegmentNumber): s.SegmentLabel for s in seg_ds.SegmentSequence}
    groups = []
    for g in report.get_volumetric_roi_measurement_groups():
        vols = g.get_measurements(name=codes.SCT.Volume)
        # The template object holds the Measurement Group container item; its children are ours.
        container = g if hasattr(g, "ContentSequence") else g[0]

        def child(code):
            return [it for it in container.ContentSequence
                    if it.ConceptNameCodeSequence[0].CodeValue == code.value][0]
        image = child(codes.DCM.ReferencedSegment)
        ref = image.ReferencedSOPSequence[0]
        numbers = ref.ReferencedSegmentNumber
        numbers = [int(n) for n in (numbers if isinstance(numbers, (list, pydicom.multival.MultiValue)) else [numbers])]
        source = child(codes.DCM.SourceSeriesForSegmentation)
        groups.append({
            "tracking_identifier": g.tracking_identifier,
            "tracking_uid": g.tracking_uid,
            "finding": g.finding_type.meaning if g.finding_type else None,
            "ml": float(vols[0].value),
            "unit": [vols[0].unit.value, vols[0].unit.scheme_designator],
            "algorithm": algorithm(vols[0]),
            "seg_uid": ref.ReferencedSOPInstanceUID,
            "segments": numbers,
            "segments_known": all(n in known for n in numbers),
            "seg_ml": sum(per_segment.get(n, float("nan")) for n in numbers),
            "source_series": source.UID,
        })
    print(json.dumps({
        "sop_class": sr.SOPClassUID,
        "template": sr.ContentTemplateSequence[0].TemplateIdentifier,
        "study": sr.StudyInstanceUID,
        "seg_study": seg_ds.StudyInstanceUID,
        "seg_uid": seg_ds.SOPInstanceUID,
        "seg_source_series": seg_ds.ReferencedSeriesSequence[0].SeriesInstanceUID,
        "seg_segments": known,
        "groups": groups,
    }))


if __name__ == "__main__":
    main()
