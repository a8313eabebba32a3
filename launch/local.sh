#!/usr/bin/env bash
# Run a project CLI on ONE node with torchrun: one process per GPU (or N CPU processes on gloo),
# restarting all workers up to R times when one dies (each restart resumes from the run directory's
# latest checkpoint, so point --set run_dir=... at the same folder).
#
# Usage:
#   launch/local.sh [-n NPROC] [-r MAX_RESTARTS] SCRIPT.py [SCRIPT ARGS...]
#     -n NPROC         processes on this node (default: the number of visible GPUs, or 1 without CUDA)
#     -r MAX_RESTARTS  worker-group restarts before giving up (default 3)
#   Environment: PYTHON (default python3), MASTER_PORT is picked by torchrun (--standalone).
#
# Examples:
#   launch/local.sh -n 4 search_evolutionary.py --config configs/pertnas_cifar10.yaml --set run_dir=runs/pertnas
#   launch/local.sh -n 2 -r 1 train_eval.py --config configs/quickstart.yaml      # 2 CPU processes on gloo
#
# The same script without this wrapper (`python3 search_evolutionary.py ...`) runs as a world of one.
set -euo pipefail

PY=${PYTHON:-python3}
nproc=""
max_restarts=3
while getopts ":n:r:h" option; do
  case "$option" in
    n) nproc=$OPTARG ;;
    r) max_restarts=$OPTARG ;;
    h) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: $0 [-n NPROC] [-r MAX_RESTARTS] SCRIPT.py [ARGS...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ]; then
  echo "usage: $0 [-n NPROC] [-r MAX_RESTARTS] SCRIPT.py [ARGS...]" >&2
  exit 2
fi
if [ -z "$nproc" ]; then
  nproc=$("$PY" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi

# A fresh rendezvous store for every restart attempt (see launch/distributed.py, pytorch#135712).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}

exec "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$nproc" \
  --max-restarts="$max_restarts" "$@"
