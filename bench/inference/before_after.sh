#!/usr/bin/env bash
# tract before and after the third_party/tract-core patch, each against onnxruntime, in one run.
#   bench/inference/before_after.sh [build|models|screen [CASE...]|all]   (default: all)
#   bench/inference/before_after.sh model DIR LABEL real|random   (one row, e.g. the 3D model)
# build:  release builds of segmenter's bench_inference example against tract alone, twice, into
#         target/bench-tract: with the registry's tract-core 0.23.9 (bench_inference-before) and with
#         third_party/tract-core patched in (bench_inference-after). Niced; offline.
# models: the shipped model on the seed-31337 volume (as run.sh), models/brain-mask-synth and
#         models/parity-patch3d on standard-normal inputs; one markdown row each: tract before,
#         after, onnxruntime (s per volume, min of REPEAT), the ratios, max |after - before|,
#         max |after - onnxruntime| and the voxels whose label (argmax) changed.
# screen: layer_screen.py with each binary (one table each).
# THREADS (tract kernel threads, 1), SLICE_THREADS (1), ORT_THREADS (= SLICE_THREADS), REPEAT (5).
# BEFORE_BIN / AFTER_BIN (the two binaries built here) and BEFORE_ENV / AFTER_ENV (environment
# words for each side) compare other pairs, e.g. one binary with a knob off and on:
#   BEFORE_BIN=target/bench-tract/bench_inference-after BEFORE_ENV=TRACT_DIRECT_SPATIAL_OC8=false \
#     bench/inference/before_after.sh models
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
BEFORE_BIN=${BEFORE_BIN:-$T/bench_inference-before}
AFTER_BIN=${AFTER_BIN:-$T/bench_inference-after}
BEFORE_ENV=${BEFORE_ENV:-}
AFTER_ENV=${AFTER_ENV:-}
side() { # before|after, then the binary's arguments
  local bin=$BEFORE_BIN words=$BEFORE_ENV
  [ "$1" = after ] && bin=$AFTER_BIN words=$AFTER_ENV
  shift
  # shellcheck disable=SC2086 # words are NAME=value pairs
  env $words "$bin" "$@"
}
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
    side "$v" --model "$model" --input "$out/volume.f32" --threads "$THREADS" \
      --slice-threads "$SLICE_THREADS" --repeat "$REPEAT" --output "$out/tract_$v.f32" >"$out/tract_$v.json"
  done
  "$PY" bench/inference/ort_bench.py ort --out "$out" --model "$model" --threads "$ORT_THREADS" \
    --repeat "$REPEAT" >"$out/ort.json"
  "$PY" bench/inference/before_after.py row --out "$out" --label "$label"
}

models() {
  echo "tract before: ${BEFORE_ENV:+$BEFORE_ENV }$BEFORE_BIN; after: ${AFTER_ENV:+$AFTER_ENV }$AFTER_BIN"
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
    local bin=$BEFORE_BIN words=$BEFORE_ENV
    [ "$v" = after ] && bin=$AFTER_BIN words=$AFTER_ENV
    echo "layer_screen.py, tract $v (${words:+$words }$bin):"
    # shellcheck disable=SC2086
    env $words "$PY" bench/inference/layer_screen.py --exe "$bin" --work "$W/screen-$v" "$@"
  done
}

case $what in
  build) build ;;
  models) models ;;
  screen) shift; screen "$@" ;;
  model) shift; one_model "$2 ($3 input)" "$1" "$3" ;; # model DIR LABEL real|random
  all) build; models; screen ;;
  *) echo "usage: $0 [build|models|screen [CASE...]|all] | model DIR LABEL real|random" >&2; exit 2 ;;
esac
