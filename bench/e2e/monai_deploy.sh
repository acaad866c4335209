#!/usr/bin/env bash
# segnode against a MONAI Deploy App SDK 4.0 application (bench/e2e/monai_deploy_app.py) on the same study and
# the same ONNX model: process start -> DICOM-SEG written, wall time and peak RSS (/usr/bin/time), alternating
# ROUNDS rounds each; then the two SEGs' label maps compared voxel by voxel on the reference series.
#
#   bench/e2e/monai_deploy.sh                 ROUNDS (default 5) rounds on the bundled head study
#   STUDY=<study folder> bench/e2e/monai_deploy.sh
#
# segnode: `segnode segment --output <file> <study>/dicom` (release build, built if missing; its default
# --inference-threads: the cores available). MONAI Deploy: the SDK's DICOM loader, a series selector and a
# series-to-volume operator per contrast, an operator running models/eval.py's Model.segment (numpy +
# onnxruntime, 2 threads: the model card's reference pipeline) and the SDK's highdicom SEG writer.
#
# The SDK's venv is made once per user in the cache (like the MONAI reference venv it borrows torch and monai's
# dependencies from: scripts/install-test-deps.sh makes that one). Installing the SDK here needs three things
# beyond `pip install` (found in session 16): Holoscan (`holoscan-cu13`, a dependency of the SDK) loads
# libcudart.so.13 at import, which the `nvidia-cuda-runtime` wheel ships (no GPU is used); it asks for a 32 MiB
# stack; and `monai` must be in the same site-packages as the SDK's `monai/deploy`, or the import finds the
# reference venv's `monai` first and `monai.deploy` is missing.
#
# Environment: ROUNDS, STUDY (default testdata/studies/synth-007-head-axial-rle), BENCH_WORK (default
# target/bench-monai-deploy), SEGNODE_BIN.
set -euo pipefail

ROUNDS="${ROUNDS:-5}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STUDY="${STUDY:-$ROOT/testdata/studies/synth-007-head-axial-rle}"
WORK="${BENCH_WORK:-$ROOT/target/bench-monai-deploy}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fdn}"
BIN="${SEGNODE_BIN:-$CARGO_TARGET_DIR/release/segnode}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/segnode"
REF="$CACHE/venv-ref-v1"
VENV="$CACHE/venv-monai-deploy-v1"
source "$ROOT/bench/lib.sh"

[[ -x /usr/bin/time ]] || { echo "/usr/bin/time is missing: apt-get install time" >&2; exit 1; }
[[ -f "$REF/.segnode-ref-v1" ]] || { echo "$REF missing: run scripts/install-test-deps.sh" >&2; exit 1; }
[[ -d "$STUDY/dicom" ]] || { echo "$STUDY/dicom: no such folder" >&2; exit 1; }
if [[ ! -x "$BIN" ]]; then
    (cd "$ROOT" && cargo build --release -p segnode)
fi
if [[ ! -f "$VENV/.segnode-mdas-v1" ]]; then
    echo "making $VENV (about 0.9 GB) ..." >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q monai-deploy-app-sdk==4.0.0 highdicom==0.28.2 pydicom==3.0.2 onnxruntime==1.32.0 \
        nvidia-cuda-runtime==13.5.37 numpy scipy
    "$VENV/bin/pip" install -q --no-deps --ignore-installed monai==1.6.1
    # torch (monai's one hard dependency) from the reference venv, after this venv's own packages
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$REF/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/zz_segnode_ref.pth"
    touch "$VENV/.segnode-mdas-v1"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH="$SITE/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ulimit -s 32768

rm -rf "$WORK" && mkdir -p "$WORK"
echo "study: $STUDY ($(find "$STUDY/dicom" -name '*.dcm' | wc -l) instances), $ROUNDS rounds each, alternating"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-13s %9s %12s\n' round pipeline seconds "peak RSS MB"
SEG_S=() SEG_M=() MD_S=() MD_M=()
run_segnode() { # round
    rm -f "$WORK/segnode.dcm"
    /usr/bin/time -o "$WORK/time" -f '%e %M' "$BIN" segment --output "$WORK/segnode.dcm" "$STUDY/dicom" \
        >"$WORK/segnode.log" 2>&1 || { echo "segnode segment failed:" >&2; tail -5 "$WORK/segnode.log" >&2; exit 1; }
    read -r s m <"$WORK/time"
    SEG_S+=("$s") SEG_M+=("$m")
    printf '%-6s %-13s %9.2f %12.0f\n' "$1" segnode "$s" "$(echo "$m / 1024" | bc -l)"
}
run_monai() { # round
    rm -rf "$WORK/monai"
    /usr/bin/time -o "$WORK/time" -f '%e %M' "$VENV/bin/python" "$ROOT/bench/e2e/monai_deploy_app.py" \
        "$STUDY/dicom" "$WORK/monai" >"$WORK/monai.log" 2>&1 \
        || { echo "the MONAI Deploy app failed:" >&2; grep -v '^\s*$' "$WORK/monai.log" | tail -8 >&2; exit 1; }
    read -r s m <"$WORK/time"
    MD_S+=("$s") MD_M+=("$m")
    printf '%-6s %-13s %9.2f %12.0f\n' "$1" "MONAI Deploy" "$s" "$(echo "$m / 1024" | bc -l)"
}
for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then run_segnode "$r"; run_monai "$r"; else run_monai "$r"; run_segnode "$r"; fi
done
ss=$(median "${SEG_S[@]}") sm=$(median "${SEG_M[@]}") ms=$(median "${MD_S[@]}") mm=$(median "${MD_M[@]}")
echo "median segnode      $(printf '%6.2f' "$ss") s  $(printf '%6.0f' "$(echo "$sm / 1024" | bc -l)") MB"
echo "median MONAI Deploy $(printf '%6.2f' "$ms") s  $(printf '%6.0f' "$(echo "$mm / 1024" | bc -l)") MB"
echo "MONAI Deploy / segnode: time $(echo "$ms / $ss" | bc -l | xargs printf '%.2f')x, peak RSS $(echo "$mm / $sm" | bc -l | xargs printf '%.1f')x"
echo "MONAI Deploy's own split, last round: $(tail -n 20 "$WORK/monai.log" | grep '^{' || true)"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# the two SEGs' label maps on every instance of the reference series (the manifest's reference_input)
"$VENV/bin/python" - "$WORK/segnode.dcm" "$WORK"/monai/*.dcm "$STUDY" <<'PYEOF'
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

study = Path(sys.argv[3])
refs = None
maps = []
for path in sys.argv[1:3]:
    seg = hd.seg.segread(path)
    series = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    if refs is None:
        files = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((study / "dicom").rglob("*.dcm"))]
        refs = [d.SOPInstanceUID for d in files if d.SeriesInstanceUID in series]
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    m = np.asarray(seg.get_pixels_by_source_instance(source_sop_instance_uids=refs, combine_segments=True,
                                                     skip_overlap_checks=True))
    maps.append((labels, m))
(la, a), (lb, b) = maps
if la != lb:
    sys.exit(f"different segments: {la} vs {lb}")
diff = int((a != b).sum())
counts = {lb[int(v)]: int((a == v).sum()) for v in np.unique(a) if v}
print(f"label maps on {len(refs)} reference instances: {diff} of {a.size} voxels differ; segnode's voxels per "
      f"segment {counts}")
sys.exit(1 if diff else 0)
PYEOF
