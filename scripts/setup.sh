#!/usr/bin/env bash
# Installs everything this project needs into the current Python environment. Safe to run again:
# each step is skipped when what it installs is already there.
#
#   - Debian packages for FFCV (pkg-config, libturbojpeg, OpenCV) and graphviz, via apt-get when root;
#   - torch==2.13.0 ONLY when no torch is importable (a user's CUDA torch is never touched, and an
#     unpinned `torch` would pull gigabytes of CUDA wheels onto a CPU machine);
#   - requirements.txt, then the optional extras (xgboost, ffcv), each allowed to fail with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check -q)

say() { printf '[setup] %s\n' "$*" >&2; }

missing_debs=()
command -v dot >/dev/null 2>&1 || missing_debs+=(graphviz)
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libturbojpeg opencv4; }; then
  missing_debs+=(pkg-config libturbojpeg0-dev libopencv-dev)
fi
if ((${#missing_debs[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    say "warning: please install the system packages: ${missing_debs[*]} (FFCV and cell plots need them)"
  fi
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  say "no torch found: installing torch==2.13.0"
  "${PIP[@]}" torch==2.13.0
fi

stamp=.setup-stamp
want=$({ cat requirements.txt requirements-extras.txt scripts/setup.sh scripts/install_ffcv.sh 2>/dev/null
         "$PY" -c "import sys; print(sys.prefix)"; } | cksum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
say "pip install -r requirements.txt"
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" -r requirements-extras.txt || say "warning: optional extras (xgboost) did not install; NB301 scoring is unavailable"
if [ -f scripts/install_ffcv.sh ]; then
  bash scripts/install_ffcv.sh || say "warning: FFCV did not install; the in-memory loader will be used"
fi
echo "$want" >"$stamp"
