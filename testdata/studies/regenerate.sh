#!/usr/bin/env bash
# Regenerates the committed synthetic test studies byte for byte (same seeds and options).
# Needs .venv-peers (scripts/install-test-deps.sh) and dcmtk (dcmcrle, dcmcjpls).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PY:-$root/.venv-peers/bin/python}
cd "$root"
"$py" models/synth/make_study.py --seed 7 --out testdata/studies/synth-007-axial-rle \
  --size 128 --fov 230 --slice-thickness 5 --transfer-syntax rle
"$py" models/synth/make_study.py --seed 42 --out testdata/studies/synth-042-oblique-jpegls \
  --oblique --size 160 --fov 224 --slice-thickness 5 --transfer-syntax jpegls --naming plain
# Heads with skull, scalp, eyes, sinuses and neck (issue 14): the bundled demo study and a coronal one.
"$py" models/synth/make_study.py --seed 7 --out testdata/studies/synth-007-head-axial-rle \
  --head --size 128 --fov 240 --coverage 200 --slice-thickness 5 --transfer-syntax rle
"$py" models/synth/make_study.py --seed 42 --out testdata/studies/synth-042-head-coronal-jpegls \
  --head --strong-bias --orientation coronal --size 128 --fov 240 --coverage 200 --slice-thickness 5 \
  --transfer-syntax jpegls
