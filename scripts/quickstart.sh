#!/usr/bin/env bash
# The README's main-job command: installs what is missing, then runs the offline CPU default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" space/visualize.py DARTS_V2 PERTNAS_EVOLUTIONARY PERTNAS_SUPERNET --out runs/cells "$@"
