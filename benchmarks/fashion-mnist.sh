#!/bin/sh
# Fashion-MNIST record of docs/benchmarks.md: a Bonsai search with the fashion-mnist
# preset, retraining of the discovered genotype from scratch, and the random
# level-2 baseline matched to that search. Each step's wall time and peak memory
# go to OUT/times.txt; each step's output goes to OUT/<step>.log.
#
# Usage: benchmarks/fashion-mnist.sh [OUT]   (default runs/fashion-mnist)
# Environment: BONSAI (default .venv/bin/bonsai), DATA_DIR (default
# /usr/share/datasets/fashion-mnist), TRAIN_IMAGES (default 10000, the training
# images of the search and the baseline, sized to aim at 60 minutes on 2 cores),
# EPOCHS (default 8), RETRAIN_EPOCHS (default 2, on all 60,000 training images),
# THREADS (torch CPU threads of every step, set through OMP_NUM_THREADS; unset
# leaves torch's default).
set -eu

OUT=${1:-runs/fashion-mnist}
BONSAI=${BONSAI:-.venv/bin/bonsai}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
TRAIN_IMAGES=${TRAIN_IMAGES:-10000}
EPOCHS=${EPOCHS:-8}
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-2}
if [ -n "${THREADS:-}" ]; then
    export OMP_NUM_THREADS="$THREADS"
fi
mkdir -p "$OUT"

timed() {
    step=$1
    shift
    /usr/bin/time -a -o "$OUT/times.txt" -f "$step: %e s wall, %M KiB peak RSS" "$@" \
        >"$OUT/$step.log" 2>"$OUT/$step.err"
    tail -n 1 "$OUT/$step.log"
}

date -u '+start %Y-%m-%dT%H:%M:%SZ' >"$OUT/times.txt"
{ date -u '+%Y-%m-%dT%H:%M:%SZ'; nproc; grep -m 1 'model name' /proc/cpuinfo; } >"$OUT/machine.txt"

timed search "$BONSAI" search --preset fashion-mnist --data-dir "$DATA_DIR" --epochs "$EPOCHS" \
    --max-train-images "$TRAIN_IMAGES" --out "$OUT/search"
# The retraining and the baseline are independent once the search has
# finished, and each trains on one torch thread, so they run side by side, one
# per core.
timed retrain "$BONSAI" train-genotype "$OUT/search/genotype.json" --dataset fashion-mnist \
    --data-dir "$DATA_DIR" --epochs "$RETRAIN_EPOCHS" --out "$OUT/retrain" --quiet &
retrain_pid=$!
timed baseline2 "$BONSAI" search --preset fashion-mnist --data-dir "$DATA_DIR" --epochs "$EPOCHS" \
    --max-train-images "$TRAIN_IMAGES" --baseline 2 --reference "$OUT/search" --out "$OUT/baseline2"
wait "$retrain_pid"
date -u '+end %Y-%m-%dT%H:%M:%SZ' >>"$OUT/times.txt"
cat "$OUT/times.txt"
