#!/usr/bin/env bash
# GPU check: what one CUDA GPU does with this project, in at most 8 minutes, as one table.
#
#   bash bench/gpu_check.sh                 # on a machine with one CUDA GPU
#   bash bench/gpu_check.sh --cpu-smoke     # tiny shapes on the CPU (gloo): checks the script itself
#   options: --work DIR (data and runs; default a temporary folder), --skip-compile, --json FILE
#
# Data: ./betons/cifar10_* when present, else CIFAR-10 from ./data, else a synthetic CIFAR-shaped set.
# (a) a 1-rank torchrun search (NCCL on CUDA) of configs/pertnas_cifar10.yaml at the paper's shape (C=16,
#     5 cells, batch 256, 32x32x3), one member = 14 stage-A units, every training 1 epoch of 4,096 images, K=4;
# (b) a stage-A unit's time with and without bf16, channels_last and torch.compile;
# (c) the FFCV loader feeding the GPU: images/s, step time with the loader vs on preloaded batches;
# (d) projected GPU-hours of the full pertnas_cifar10 protocol on 1 and 4 GPUs (formula printed).
# (b)-(d) and the table: bench/gpu_stage_a.py (its docstring has the details).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=() WORK="" MEASURE=() SEARCH_LIMIT_S=300
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE=(--cpu-smoke); export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES="" ;;
        --work) WORK="$2"; shift ;;
        --skip-compile) MEASURE+=(--skip-compile) ;;
        --json) MEASURE+=(--json "$2"); shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PYTHON="${PYTHON:-python}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"
started=$SECONDS

read -r BETONS LABEL < <("$PYTHON" bench/gpu_stage_a.py prepare --work "$WORK" "${SMOKE[@]}")
echo "data: $BETONS ($LABEL), work folder $WORK" >&2

# (a): a fresh run directory each time (a leftover one would resume instead of searching)
RUN="$WORK/runs/stage_a_units"
rm -rf "$RUN"
read -r -a SETS < <("$PYTHON" bench/gpu_stage_a.py search-args "${SMOKE[@]}")
TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 timeout "$SEARCH_LIMIT_S" \
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 search_evolutionary.py \
    --config configs/pertnas_cifar10.yaml --save "$WORK/runs" --note stage_a_units \
    --set "data.beton_dir=$BETONS" "${SETS[@]}" > "$WORK/search.log" 2>&1 \
    || { echo "error: part (a)'s search failed or passed ${SEARCH_LIMIT_S} s; its log: $WORK/search.log" >&2; tail -20 "$WORK/search.log" >&2; exit 1; }

# (b)-(d) get what is left of 8 minutes, less a margin; the compile variant runs last and is cut off first
"$PYTHON" bench/gpu_stage_a.py measure --betons "$BETONS" --data-label "$LABEL" --search-run "$RUN" \
    --budget-s "$((470 - (SECONDS - started)))" "${SMOKE[@]}" "${MEASURE[@]}"
echo "gpu_check: $((SECONDS - started)) s in all" >&2
