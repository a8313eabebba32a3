#!/usr/bin/env bash
# The README's main-job command: installs what is missing, then runs the evolutionary search's offline
# CPU default (scikit-learn digits, a small network: about 2 minutes on 2 cores). Extra arguments go to
# search_evolutionary.py, e.g. `bash scripts/quickstart.sh --seed 3`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" search_evolutionary.py --config configs/quickstart.yaml "$@"
