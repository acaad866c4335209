#!/usr/bin/env python3
"""The shipped tumour model as a MONAI Deploy App SDK 4.0 application (issue 19: the peer a user would pick
instead of segnode): the SDK's DICOM loader, one series selector and one series-to-volume operator per input
contrast, an operator that runs the model, and the SDK's highdicom SEG writer on the reference series.

    <venv>/bin/python bench/e2e/monai_deploy_app.py STUDY_DICOM_FOLDER OUTPUT_FOLDER [--model MODEL_FOLDER]

The model operator calls `models/eval.py`'s `Model.segment`: the numpy + onnxruntime twin of segnode's pipeline
(brain-extraction stage, resampling to the model grid, normalisation, slice inference with the manifest's
mirroring, resampling back, labels outside the brain cleared), which the model card's figures come from. So the
two pipelines differ in their DICOM, volume and SEG code and runtimes, not in the model's arithmetic, and
`bench/e2e/monai_deploy.sh` checks that their label maps agree. Run by `bench/e2e/monai_deploy.sh`, which makes
the venv this needs.
"""
import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))

from highdicom.sr.coding import CodedConcept  # noqa: E402
from monai.deploy.conditions import CountCondition  # noqa: E402
from monai.deploy.core import Application, Image, Operator, OperatorSpec  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_seg_writer_operator import (  # noqa: E402
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator  # noqa: E402

import eval as ev  # noqa: E402

# One selection rule per contrast, on the Series Description (the SDK's selector matches regular expressions
# with re.search); the same intent as the manifest's series_description/exclude lists, written as one pattern
# each because a selection has no exclusions.
RULES = {
    "T1": r"(?i)^(?!.*(post|\+ ?c\b|\bgd\b|gad|contrast|\bce\b|flair)).*(\bt1|mprage)",
    "T1CE": r"(?i)^(?!.*flair).*\bt1.*(post|\+ ?c\b|\bgd\b|gad|contrast|\bce\b)",
    "T2": r"(?i)^(?!.*(flair|t2 ?\*|\bgre\b)).*\bt2",
    "FLAIR": r"(?i)flair",
}


class SegnodeModelOperator(Operator):
    """Four volumes in (one per contrast, [slices, rows, cols] as the SDK builds them), a label map out on the
    reference series' grid, in the order of the reference series' instances (what the SEG writer pairs frames
    with)."""

    def __init__(self, fragment, *args, model_folder, channels, timings, **kwargs):
        self.model = ev.Model(model_folder, threads=2)
        self.channels = channels
        self.timings = timings
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        for c in self.channels:
            spec.input(f"image_{c}")
        spec.output("seg_image")

    def compute(self, op_input, op_output, context):
        images = {c: op_input.receive(f"image_{c}") for c in self.channels}
        vols = {c: np.ascontiguousarray(img.asnumpy(), dtype=np.float32) for c, img in images.items()}
        shapes = {v.shape for v in vols.values()}
        if len(shapes) != 1:
            raise ValueError(f"the series have different shapes {shapes}: inter-series resampling is not here")
        meta = images["FLAIR"].metadata()
        t = time.perf_counter()
        labels, _ = self.model.segment(vols, float(meta["row_pixel_spacing"]), float(meta["col_pixel_spacing"]))
        self.timings["model_s"] = round(time.perf_counter() - t, 3)
        op_output.emit(Image(labels.astype(np.uint8), metadata=meta), "seg_image")


class SegApp(Application):
    def __init__(self, *args, study, output, model_folder, timings, **kwargs):
        self.study, self.output, self.model_folder, self.timings = study, output, model_folder, timings
        super().__init__(*args, **kwargs)

    def compose(self):
        manifest = tomllib.loads((self.model_folder / "model.toml").read_text())
        channels = [i["name"] for i in sorted(manifest["inputs"], key=lambda i: i["channel"])]
        # the loader has no upstream: without a count it would be scheduled again and again
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.study, name="loader")
        model = SegnodeModelOperator(self, model_folder=self.model_folder, channels=channels,
                                     timings=self.timings, name="model")
        segments = [
            SegmentDescription(
                segment_label=s["name"],
                segmented_property_category=CodedConcept(s["category"]["value"], s["category"]["scheme"],
                                                         s["category"]["meaning"]),
                segmented_property_type=CodedConcept(s["type"]["value"], s["type"]["scheme"], s["type"]["meaning"]),
                algorithm_name=manifest["algorithm"]["name"],
                algorithm_version=manifest["algorithm"]["version"],
            )
            for s in sorted(manifest["segments"], key=lambda s: s["label"])
        ]
        writer = DICOMSegmentationWriterOperator(self, segment_descriptions=segments, output_folder=self.output,
                                                 name="seg_writer")
        for c in channels:
            rules = json.dumps({"selections": [{"name": c, "conditions": {"Modality": "(?i)MR",
                                                                          "SeriesDescription": RULES[c]}}]})
            selector = DICOMSeriesSelectorOperator(self, rules=rules, name=f"select_{c}")
            volume = DICOMSeriesToVolumeOperator(self, name=f"volume_{c}")
            self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(selector, volume, {("study_selected_series_list", "study_selected_series_list")})
            self.add_flow(volume, model, {("image", f"image_{c}")})
            if c == manifest["geometry"]["reference_input"]:
                self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(model, writer, {("seg_image", "seg_image")})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "brats-synth-unet2d")
    a = ap.parse_args()
    a.output.mkdir(parents=True, exist_ok=True)
    timings = {"imports_s": round(time.perf_counter() - T0, 3)}
    app = SegApp(study=a.study.resolve(), output=a.output.resolve(), model_folder=a.model.resolve(),
                 timings=timings)
    app.run()
    timings["total_s"] = round(time.perf_counter() - T0, 3)
    segs = sorted(a.output.glob("*.dcm"))
    if len(segs) != 1:
        sys.exit(f"expected one SEG in {a.output}, found {len(segs)}")
    print(json.dumps(dict(seg=str(segs[0]), **timings)))


if __name__ == "__main__":
    main()
