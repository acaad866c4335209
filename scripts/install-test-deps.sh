#!/usr/bin/env bash
# Installs every real peer the test suite drives: dcmtk, dicom3tools, Orthanc + its DICOMweb plugin,
# headless Chromium (Debian), a Python venv (.venv-peers) with pydicom, highdicom, pynetdicom, dcmqi,
# the moto server, cfn-lint and Playwright (driving the system Chromium), the OHIF v3 viewer's
# built dist (npm pack, cached in .cache/ohif/), dcm2niix, and a second venv (.venv-ref) with the
# MONAI and nnU-Net references for the patch3d parity tests (torch for CPU use: PyPI's wheel pulls
# CUDA libraries it does not use here, ~6.5 GB installed, kept once per user in ~/.cache/segnode).
# Idempotent: a second run only checks. Fails loudly if anything cannot be installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-peers"

need_apt=0
for tool in storescu dciodvfy Orthanc chromium-headless-shell openssl dcm2niix; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # --no-install-recommends: dicom3tools otherwise pulls ~150 MB of ghostscript.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    dcmtk dicom3tools orthanc orthanc-dicomweb chromium-headless-shell openssl dcm2niix >/dev/null
fi
# npm fetches the OHIF package; a nodejs from elsewhere (NodeSource) already ships it and conflicts
# with Debian's npm package, so install that only when there is no npm at all.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.segnode-peers-v3"
if [ ! -f "$stamp" ]; then
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q pydicom==3.0.2 highdicom==0.28.2 pynetdicom==3.0.4 dcmqi "moto[server]>=5.0,<6" \
    nibabel numpy pillow pylibjpeg pylibjpeg-openjpeg "cfn-lint>=1,<2"
  touch "$stamp"
fi
# nibabel is the NIfTI oracle of segmenter/tests/nifti.rs and conformance/tests/s3_upload.rs (it writes
# what segnode reads, reads what segnode writes; the tests rely on its 5.x affine rules): pinned.
if [ ! -f "$venv/.segnode-nibabel-v1" ]; then
  "$venv/bin/pip" install -q nibabel==5.4.2
  touch "$venv/.segnode-nibabel-v1"
fi
# Playwright for Python drives the Debian chromium-headless-shell (its own browser download is not
# used: `playwright install` is never run).
if [ ! -f "$venv/.segnode-playwright-v1" ]; then
  "$venv/bin/pip" install -q "playwright>=1.49,<2"
  touch "$venv/.segnode-playwright-v1"
fi

# The MONAI / nnU-Net references (segmenter/tests/integration/patch3d_parity.rs, models/parity-patch3d/).
# The venv is 6.5 GB (PyPI's torch pulls CUDA libraries it does not use here; PyPI has no CPU-only
# wheel and no other index is reachable), so it lives once per user in the cache, like cargo's
# registry, shared by every checkout and CI clone on the machine; .venv-ref links to it. The stamp
# names the pinned set: change the pins, bump it.
ref_home="${XDG_CACHE_HOME:-$HOME/.cache}/segnode/venv-ref-v1"
if [ ! -f "$ref_home/.segnode-ref-v1" ]; then
  rm -rf "$ref_home"
  mkdir -p "$(dirname "$ref_home")"
  python3 -m venv "$ref_home"
  "$ref_home/bin/pip" install -q --upgrade pip
  "$ref_home/bin/pip" install -q torch==2.15.0 monai==1.6.1 nnunetv2==2.8.1 onnx==1.23.2 onnxruntime==1.32.0 \
    nibabel numpy
  touch "$ref_home/.segnode-ref-v1"
fi
ref="$root/.venv-ref"
if [ ! -f "$ref/.segnode-ref-v1" ] || [ -L "$ref" ]; then
  rm -rf "$ref"
  ln -s "$ref_home" "$ref"
fi

# OHIF v3: the npm package ships a built dist/ (index.html, app-config.js, bundles); no build needed.
ohif_version=3.13.2
ohif="$root/.cache/ohif/$ohif_version"
if [ ! -f "$ohif/dist/index.html" ]; then
  rm -rf "$ohif.tmp" && mkdir -p "$ohif.tmp"
  (cd "$ohif.tmp" && npm pack --silent "@ohif/app@$ohif_version" >/dev/null && tar -xzf ohif-app-*.tgz)
  test -f "$ohif.tmp/package/dist/index.html" || { echo "install-test-deps: OHIF dist missing in the npm package" >&2; exit 1; }
  rm -rf "$ohif" && mkdir -p "$(dirname "$ohif")" && mv "$ohif.tmp/package" "$ohif" && rm -rf "$ohif.tmp"
fi

for tool in storescu storescp echoscu dcmsend dcmcjpeg dcmcjpls dcmcrle dcmconv dciodvfy Orthanc chromium-headless-shell openssl dcm2niix; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
"$venv/bin/python" -c "import pydicom, highdicom, pynetdicom, moto, numpy" 
"$venv/bin/python" -c "import nibabel; assert nibabel.__version__ == '5.4.2', nibabel.__version__"
test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { echo "install-test-deps: Orthanc's DICOMweb plugin missing" >&2; exit 1; }
"$venv/bin/python" -c "import playwright.sync_api"
"$ref/bin/python" -c "import torch, monai, onnx, onnxruntime, nnunetv2.inference.predict_from_raw_data"
test -f "$ohif/dist/app-config.js" || { echo "install-test-deps: $ohif/dist/app-config.js missing" >&2; exit 1; }
test -x "$venv/bin/moto_server" || { echo "install-test-deps: moto_server missing in $venv" >&2; exit 1; }
test -x "$venv/bin/cfn-lint" || { echo "install-test-deps: cfn-lint missing in $venv" >&2; exit 1; }
echo "install-test-deps: ok ($venv)"
