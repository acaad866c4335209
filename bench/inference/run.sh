#!/usr/bin/env bash
# tract-onnx vs onnxruntime on the shipped model, one full volume, same run; prints agreement and the time ratio.
#   bench/inference/run.sh            (THREADS=2 REPEAT=3 MODEL=models/brats-synth-unet2d by default;
#                                      SLICE_THREADS=N tract slices at once, ORT_THREADS onnxruntime's)
# Needs .venv-train (onnxruntime, numpy, nibabel, pydicom) and a Rust toolchain. Out of CI.
# Targets: max |tract - onnxruntime| <= 1e-4; tract time <= 1.5 x onnxruntime.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PY:-$root/.venv-train/bin/python}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-3}
MODEL=${MODEL:-models/brats-synth-unet2d}
W=${W:-$root/target/bench-inference}
mkdir -p "$W"
"$py" bench/inference/ort_bench.py prepare --out "$W" --model "$MODEL"
PROFILE=${PROFILE:-dev}
cargo build -q -p segmenter --example bench_inference --profile "$PROFILE"
[ "$PROFILE" = dev ] && dir=debug || dir=$PROFILE
exe=target/$dir/examples/bench_inference
SLICE_THREADS=${SLICE_THREADS:-1}
"$exe" --model "$MODEL" --input "$W/volume.f32" --threads "$THREADS" --slice-threads "$SLICE_THREADS" \
  --repeat "$REPEAT" --output "$W/tract_out.f32" \
  | tee "$W/tract.json"
# onnxruntime's intra-op threads (default THREADS); compare like for like in cores, e.g.
# THREADS=1 SLICE_THREADS=2 ORT_THREADS=2 on a 2-core machine.
ORT_THREADS=${ORT_THREADS:-$THREADS}
"$py" bench/inference/ort_bench.py ort --out "$W" --model "$MODEL" --threads "$ORT_THREADS" --repeat "$REPEAT" | tee "$W/ort.json"
"$py" bench/inference/ort_bench.py compare --out "$W"
