#!/bin/bash
# Run glas-cpu strategies one after another, each over seeds 0, 1, 2, into benchmarks/results/glas-cpu
# (resuming what is there), then rewrite that folder's report on its complete runs. One queue per
# free core: each process uses one torch thread. SEEDS=2 (or 0,1) runs only those seeds, e.g. to share
# one slow strategy's seeds between the two cores.
#
#   nohup bash benchmarks/glas_cpu_queue.sh 6 3 > /tmp/queue-a.log 2>&1 &
#   nohup bash benchmarks/glas_cpu_queue.sh 1 random-image > /tmp/queue-b.log 2>&1 &
#
# AFTER=<pid> waits for that process to end first. GLAS=<dir> is the GlaS release (default
# ../shared/data/glas). OUT=<dir> another bench folder (default benchmarks/results/glas-cpu);
# FLAGS="..." adds bench options that the strategies need and that leave training as it is, e.g.
#
#   FLAGS=--gradients bash benchmarks/glas_cpu_queue.sh badge
#   FLAGS=--tta bash benchmarks/glas_cpu_queue.sh 'iu(uncertainty=tta)'
#   OUT=benchmarks/results/glas-cpu-dropout FLAGS="--dropout 0.2 --mc-samples 8" \
#       bash benchmarks/glas_cpu_queue.sh random-patch 'iu(uncertainty=bald)'   # dropout changes the net
#
# Never queue the same strategy and seed into one folder from two queues: two processes would write one run.
set -u
cd "$(dirname "$0")/.."
GLAS=${GLAS:-../shared/data/glas}
OUT=${OUT:-benchmarks/results/glas-cpu}
FLAGS=${FLAGS:-}
SEEDS=${SEEDS:-0,1,2}
if [ -n "${AFTER:-}" ]; then
    while kill -0 "$AFTER" 2>/dev/null; do sleep 30; done
fi
for strategy in "$@"; do
    echo "$(date -u '+%F %H:%M') start $strategy"
    # shellcheck disable=SC2086  # FLAGS is a list of options
    focal-al bench --preset glas-cpu --data-dir "$GLAS" --strategies "$strategy" --seeds "$SEEDS" --threads 1 \
        --no-full-supervision --out-dir "$OUT" --resume $FLAGS
    status=$?
    echo "$(date -u '+%F %H:%M') end $strategy (exit $status)"
done
focal-al report "$OUT" --complete-only --data-dir "$GLAS"
