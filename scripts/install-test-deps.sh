#!/usr/bin/env bash
# Installs every real peer the test suite drives: dcmtk, dicom3tools, Orthanc (Debian),
# and a Python venv (.venv-peers) with pydicom, highdicom, pynetdicom, dcmqi, the moto server and cfn-lint.
# Idempotent: a second run only checks. Fails loudly if anything cannot be installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-peers"

need_apt=0
for tool in storescu dciodvfy Orthanc; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # --no-install-recommends: dicom3tools otherwise pulls ~150 MB of ghostscript.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    dcmtk dicom3tools orthanc orthanc-dicomweb >/dev/null
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

for tool in storescu storescp echoscu dcmsend dcmcjpeg dcmcjpls dcmcrle dcmconv dciodvfy Orthanc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still missing" >&2; exit 1; }
done
"$venv/bin/python" -c "import pydicom, highdicom, pynetdicom, moto, numpy" 
test -x "$venv/bin/moto_server" || { echo "install-test-deps: moto_server missing in $venv" >&2; exit 1; }
test -x "$venv/bin/cfn-lint" || { echo "install-test-deps: cfn-lint missing in $venv" >&2; exit 1; }
echo "install-test-deps: ok ($venv)"
