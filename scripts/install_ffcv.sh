#!/usr/bin/env bash
# FFCV 1.0.2 builds from source against libturbojpeg and OpenCV (scripts/setup.sh installs the Debian
# packages). Its own requirements (numba, opencv-python, ...) come from PyPI; it needs no torchvision.
set -euo pipefail
PY=${PYTHON:-python3}
if "$PY" -c "import ffcv" >/dev/null 2>&1; then exit 0; fi
"$PY" -m pip install --disable-pip-version-check -q ffcv==1.0.2
"$PY" -c "import ffcv.loader, ffcv.fields, ffcv.transforms"
