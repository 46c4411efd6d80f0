#!/bin/bash
# Run glas-cpu strategies one after another, each over seeds 0, 1, 2, into benchmarks/results/glas-cpu-fast
# (resuming what is there), then rewrite that folder's report on its complete runs. One queue per
# free core: each process uses one torch thread. SEEDS=2 (or 0,1) runs only those seeds, e.g. to share
# one slow strategy's seeds between the two cores.
#
#   nohup bash benchmarks/glas_cpu_queue.sh 6 3 > /tmp/queue-a.log 2>&1 &
#   nohup bash benchmarks/glas_cpu_queue.sh 1 random-image > /tmp/queue-b.log 2>&1 &
#
# AFTER=<pid> waits for that process to end first. GLAS=<dir> is the GlaS release (default
# ../shared/data/glas). OUT=<dir> another bench folder (default benchmarks/results/glas-cpu-fast, made
# on the fast path with the machine's own kernels). The folders made on the plain path before it,
# glas-cpu and glas-cpu-dropout, take their runs with ISA=avx2 FLAGS=--eager-path (the bench refuses
# other numerics in a folder);
# FLAGS="..." adds bench options that the strategies need and that leave training as it is, e.g.
#
#   FLAGS=--gradients bash benchmarks/glas_cpu_queue.sh badge
#   FLAGS=--tta bash benchmarks/glas_cpu_queue.sh 'iu(uncertainty=tta)'
#   OUT=benchmarks/results/glas-cpu-dropout ISA=avx2 FLAGS="--eager-path --dropout 0.2 --mc-samples 8" \
#       bash benchmarks/glas_cpu_queue.sh random-patch 'iu(uncertainty=bald)'   # dropout changes the net
#
# AGAINST="7-focannot ..." adds those strategies as further baselines of the closing report
# (focal-al report --also-against); leave it empty for a folder without them (glas-cpu-dropout).
#
# Never queue the same strategy and seed into one folder from two queues: two processes would write one run.
#
# ISA=avx2 holds torch's and oneDNN's CPU kernels to AVX2, as the machine that made glas-cpu's and
# glas-cpu-dropout's first runs computed: on an AMD EPYC with AVX-512 the same seed otherwise gives other
# floats (round 0 of random patches, seed 1: Dice 0.7414 against the committed 0.7551; held to AVX2,
# 0.7551 to the last digit), and pairs by seed would mix that noise into every difference. The cap
# is not enough everywhere: on an Intel Xeon (Sapphire Rapids class) held to AVX2, round 0 gave Dice
# 0.3518 for seed 0 (committed 0.4148) and 0.6774 for seed 2 (0.6787); the runner then warns after
# round 0 and the report marks those pairs with a dagger. ISA= (empty, the default) leaves the kernels to torch.
set -u
cd "$(dirname "$0")/.."
GLAS=${GLAS:-../shared/data/glas}
OUT=${OUT:-benchmarks/results/glas-cpu-fast}
FLAGS=${FLAGS:-}
SEEDS=${SEEDS:-0,1,2}
ISA=${ISA:-}
AGAINST=${AGAINST:-}
if [ -n "$ISA" ]; then
    export ATEN_CPU_CAPABILITY="$ISA" ONEDNN_MAX_CPU_ISA="${ISA^^}"
fi
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
against=()
for key in $AGAINST; do against+=(--also-against "$key"); done
focal-al report "$OUT" --complete-only --data-dir "$GLAS" "${against[@]}"
