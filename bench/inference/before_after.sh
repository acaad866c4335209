#!/usr/bin/env bash
# tract before and after the third_party/tract-core patch, each against onnxruntime, in one run.
#   bench/inference/before_after.sh [build|models|screen|all]   (default: all)
# build:  release builds of segmenter's bench_inference example against tract alone, twice, into
#         target/bench-tract: with the registry's tract-core 0.23.9 (bench_inference-before) and with
#         third_party/tract-core patched in (bench_inference-after). Niced; offline.
# models: the shipped model on the seed-31337 volume (as run.sh), models/brain-mask-synth and
#         models/parity-patch3d on standard-normal inputs; one markdown row each: tract before,
#         after, onnxruntime (s per volume, min of REPEAT), the ratios, max |after - before|,
#         max |after - onnxruntime| and the voxels whose label (argmax) changed.
# screen: layer_screen.py with each binary (one table each).
# THREADS (tract kernel threads, 1), SLICE_THREADS (1), ORT_THREADS (= SLICE_THREADS), REPEAT (5).
# Python: PY (onnxruntime, torch; default the ref venv), PREP_PY (pydicom, numpy: the peers venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
what=${1:-all}
ref=$root/.venv-ref/bin/python
[ -x "$ref" ] || ref=$HOME/.cache/segnode/venv-ref-v1/bin/python
PY=${PY:-$ref}
PREP_PY=${PREP_PY:-${SEGNODE_PEERS_VENV:-$root/.venv-peers}/bin/python}
THREADS=${THREADS:-1}
SLICE_THREADS=${SLICE_THREADS:-1}
ORT_THREADS=${ORT_THREADS:-$SLICE_THREADS}
REPEAT=${REPEAT:-5}
T=$root/target/bench-tract
W=$root/target/bench-inference/before-after

build_one() { # name, extra cargo args...
  local name=$1 dir=$T/$1
  shift
  mkdir -p "$dir"
  # A throwaway manifest per variant, so that the patch's lock-file entry stays out of the tree.
  sed "s#path = \"../../../segmenter/#path = \"$root/segmenter/#" bench/inference/tract-bench/Cargo.toml \
    >"$dir/Cargo.toml"
  cp bench/inference/tract-bench/Cargo.lock "$dir/Cargo.lock"
  nice -n 10 cargo build -q --release --offline --manifest-path "$dir/Cargo.toml" --target-dir "$T/target" "$@"
  cp "$T/target/release/bench_inference" "$T/bench_inference-$name"
}

build() {
  build_one before
  build_one after --config "patch.crates-io.tract-core.path=\"$root/third_party/tract-core\""
}

one_model() { # label, model dir, prepare: real|random
  local label=$1 model=$2 kind=$3 out=$W/$(basename "$2")
  mkdir -p "$out"
  if [ "$kind" = real ]; then
    "$PREP_PY" bench/inference/ort_bench.py prepare --out "$out" --model "$model" 2>/dev/null
  else
    "$PY" bench/inference/before_after.py random --out "$out" --model "$model"
  fi
  for v in before after; do
    "$T/bench_inference-$v" --model "$model" --input "$out/volume.f32" --threads "$THREADS" \
      --slice-threads "$SLICE_THREADS" --repeat "$REPEAT" --output "$out/tract_$v.f32" >"$out/tract_$v.json"
  done
  "$PY" bench/inference/ort_bench.py ort --out "$out" --model "$model" --threads "$ORT_THREADS" \
    --repeat "$REPEAT" >"$out/ort.json"
  "$PY" bench/inference/before_after.py row --out "$out" --label "$label"
}

models() {
  echo "tract: $THREADS kernel thread(s) x $SLICE_THREADS slice(s) at once; onnxruntime: $ORT_THREADS intra-op thread(s); min of $REPEAT"
  echo
  echo "| model (input) | tract before s | tract after s | onnxruntime s | before/ort | after/ort | speed-up | max abs after-before | max abs after-ort | labels changed |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  one_model "brats-synth-unet2d (57 slices, seed 31337)" models/brats-synth-unet2d real
  one_model "brain-mask-synth (24 random slices)" models/brain-mask-synth random
  one_model "parity-patch3d (24 random patches)" models/parity-patch3d random
}

screen() {
  for v in before after; do
    echo "layer_screen.py, tract $v:"
    "$PY" bench/inference/layer_screen.py --exe "$T/bench_inference-$v" --work "$W/screen-$v"
  done
}

case $what in
  build) build ;;
  models) models ;;
  screen) screen ;;
  all) build; models; screen ;;
  *) echo "usage: $0 [build|models|screen|all]" >&2; exit 2 ;;
esac
