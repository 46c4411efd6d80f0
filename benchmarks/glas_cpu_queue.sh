#!/bin/bash
# Run glas-cpu strategies one after another, each over seeds 0, 1, 2, into benchmarks/results/glas-cpu
# (resuming what is there), then rewrite that folder's report on its complete runs. One queue per
# free core: each process uses one torch thread.
#
#   nohup bash benchmarks/glas_cpu_queue.sh 6 3 > /tmp/queue-a.log 2>&1 &
#   nohup bash benchmarks/glas_cpu_queue.sh 1 random-image > /tmp/queue-b.log 2>&1 &
#
# AFTER=<pid> waits for that process to end first. GLAS=<dir> is the GlaS release (default
# ../shared/data/glas). Never queue the same strategy in two queues: two processes would write one run.
set -u
cd "$(dirname "$0")/.."
GLAS=${GLAS:-../shared/data/glas}
OUT=benchmarks/results/glas-cpu
if [ -n "${AFTER:-}" ]; then
    while kill -0 "$AFTER" 2>/dev/null; do sleep 30; done
fi
for strategy in "$@"; do
    echo "$(date -u '+%F %H:%M') start $strategy"
    focal-al bench --preset glas-cpu --data-dir "$GLAS" --strategies "$strategy" --seeds 0,1,2 --threads 1 \
        --no-full-supervision --out-dir "$OUT" --resume
    status=$?
    echo "$(date -u '+%F %H:%M') end $strategy (exit $status)"
done
focal-al report "$OUT" --complete-only --data-dir "$GLAS"
