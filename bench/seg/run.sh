#!/usr/bin/env bash
# Encode benchmark: dicom-seg vs highdicom, same input, same run.
# A 4-segment BINARY SEG over a 240x240x155 single-frame MR series, empty frames omitted.
# Ours: SourceSeries::from_datasets + SegmentationBuilder::build + to_bytes (median of REPS, warm).
# highdicom: hd.seg.Segmentation(...) constructor (median and best of 5 warm runs), and constructor + save.
# The machine is shared: run it when it is quiet, or look at the best-of ratio.
# usage: bench/seg/run.sh [REPS]    (needs the peers venv: scripts/install-test-deps.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="${SEGNODE_PEERS_VENV:-$root/.venv-peers}"
reps="${1:-20}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
cargo build --release -q -p dicom-seg --example bench_encode
bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/bench_encode"
"$bin" "$work" "$reps" | tee "$work/ours.txt"
"$venv/bin/python" bench/seg/bench_highdicom.py "$work" 5 | tee "$work/hd.txt"
# Both SEGs must pass dciodvfy and have the same number of frames.
get() { grep "^$1=" "$work"/*.txt | head -1 | cut -d= -f2; }
[ "$(get frames)" = "$(get hd_frames)" ] || { echo "frame counts differ: $(get frames) vs $(get hd_frames)" >&2; exit 1; }
if command -v dciodvfy >/dev/null; then
  echo "dciodvfy errors (ours): $(dciodvfy "$work/ours.seg.dcm" 2>&1 >/dev/null | grep -c '^Error' || true)"
fi
python3 - "$(get ours_encode_median_s)" "$(get hd_ctor_median_s)" "$(get hd_ctor_save_median_s)" \
  "$(get ours_encode_min_s)" "$(get hd_ctor_min_s)" <<'PY'
import sys
ours, hd, hd_save, ours_min, hd_min = map(float, sys.argv[1:6])
print(f"ratio highdicom_ctor/ours_encode (medians) = {hd / ours:.1f}x")
print(f"ratio highdicom_ctor/ours_encode (best of each) = {hd_min / ours_min:.1f}x")
print(f"ratio (highdicom_ctor+save)/ours_encode (medians) = {hd_save / ours:.1f}x")
PY
