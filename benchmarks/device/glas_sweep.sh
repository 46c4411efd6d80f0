#!/bin/bash
# The GlaS sweep of the glas-cpu protocol on a GPU machine that receives the repository only:
# every strategy of issue-level interest x 3 seeds, run side by side (--jobs), results packed into
# $OUT/results.tgz every PACK_EVERY seconds so that a run stopped at its time limit still returns
# whatever rounds were committed. Needs, in .gpu/ (prepared by benchmarks/device/prepare.sh):
# whl/ (skorch, modAL-python, POT, focal-al wheels) and glas-half/ (GlaS resized by stage_glas.py).
#
#   DEADLINE=520 bash benchmarks/device/glas_sweep.sh            # on the GPU machine
#   DEVICE=cpu SKIP_INSTALL=1 OUT=/tmp/o EXTRA="--budget 0.03 --seeds 0" MAIN=random-patch,7 MAIN_OPTS=" " \
#       TTA=4 DROPOUT=4 JOBS_MAIN=2 JOBS_TTA=1 JOBS_DROPOUT=1 bash benchmarks/device/glas_sweep.sh   # a dry run here
#
# Measured on an H100 (16 cores) with the glas-cpu protocol, one torch thread per process: alone, a
# training step took 9 ms and scoring the 12,237-patch pool 4.2 s (23 s with --tta, 2.6 s with
# --gradients); 16 processes side by side *without* MPS took 220 ms a step (the GPU time-slices
# between processes), fewer steps per second in all than one process alone. So this script starts
# MPS when it can and keeps --tta to the strategy that reads it; the logs give each round's seconds.
set -u
T0=$(date +%s)
DEADLINE=${DEADLINE:-520}
PACK_EVERY=${PACK_EVERY:-30}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
JOBS_MAIN=${JOBS_MAIN:-10}
JOBS_TTA=${JOBS_TTA:-3}
JOBS_DROPOUT=${JOBS_DROPOUT:-3}
WORK=${WORK:-/tmp/focal-al-sweep}
OUT=${OUT:?OUT must name the folder that comes back}
export PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - T0 )); }

if [ -z "${SKIP_INSTALL:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
FOCAL="python3 -m focal_al"
if [ "$DEVICE" = cuda ] && [ -z "${NO_MPS:-}" ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && echo "MPS started" | tee -a "$OUT/env.txt"
fi
{ nvidia-smi -L 2>/dev/null; nproc; python3 -c "import torch, focal_al, skorch, modAL, ot, sklearn, numpy
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__,
      'sklearn', sklearn.__version__, 'skorch', skorch.__version__, 'focal_al', focal_al.__file__)"; } \
    2>&1 | tee "$OUT/env.txt" || exit 1

# 1. Smoke: every code path of the sweep on a tiny synthetic problem, on the device (fails fast).
TINY="--n-images 11 --image-size 48 --patch-size 16 --overlap 0.5 --width 2 --depth 2 --train-steps 2
      --initial-train-steps 2 --batch-size 4 --step 0.1 --budget 0.25 --clusters 2 --max-train-steps 4
      --full-supervision-epochs 1 --seeds 0 --threads 1 --device $DEVICE --quiet"
$FOCAL bench $TINY --tta --gradients --jobs 2 --out-dir "$WORK/smoke" \
    --strategies "random-patch,3,7,badge,iu(uncertainty=tta),focannot(selection=softrank)" > "$OUT/smoke.log" 2>&1 \
  && $FOCAL bench $TINY --dropout 0.2 --mc-samples 4 --no-full-supervision --out-dir "$WORK/smoke-dropout" \
    --strategies "iu(uncertainty=bald)" >> "$OUT/smoke.log" 2>&1 \
  || { echo "smoke failed after $(elapsed) s"; tail -40 "$OUT/smoke.log"; exit 2; }
echo "smoke passed after $(elapsed) s"

# 2. The sweep. Both groups share one patch cache, built once before the parallel jobs start.
COMMON="--preset glas-cpu --data-dir .gpu/glas-half --scale 1 --seeds 0,1,2 --threads 1 --device $DEVICE --resume $EXTRA"
MAIN=${MAIN:-"random-image,random-patch,1,3,4,5,6,7,stochastic,focannot(selection=power),focannot(selection=softrank),coreset,typiclust,random-foreground,badge"}
MAIN_OPTS=${MAIN_OPTS:-"--gradients"}
TTA=${TTA:-"iu(uncertainty=tta)"}
DROPOUT=${DROPOUT:-"random-patch,iu(uncertainty=bald)"}
python3 - "$WORK" <<'PY' || exit 3
import sys
from pathlib import Path
from focal_al.bench.config import preset_config
from focal_al.bench.runner import prepare_data
work = Path(sys.argv[1])
config = preset_config("glas-cpu", data_dir=".gpu/glas-half", scale=1.0, out_dir=str(work / "glas-gpu"))
data = prepare_data(config, work / "glas-gpu")
print(f"patch cache: {len(data.store)} patches of {data.store.n_images} images")
PY
mkdir -p "$WORK/glas-gpu-dropout" && cp -r "$WORK/glas-gpu/cache" "$WORK/glas-gpu-dropout/"
$FOCAL bench $COMMON $MAIN_OPTS --jobs "$JOBS_MAIN" --out-dir "$WORK/glas-gpu" --strategies "$MAIN" \
    > "$OUT/main.log" 2>&1 &
MAIN_PID=$!
$FOCAL bench $COMMON --tta --no-full-supervision --jobs "$JOBS_TTA" --out-dir "$WORK/glas-gpu" --strategies "$TTA" \
    > "$OUT/tta.log" 2>&1 &
TTA_PID=$!
$FOCAL bench $COMMON --dropout 0.2 --mc-samples 8 --no-full-supervision --jobs "$JOBS_DROPOUT" \
    --out-dir "$WORK/glas-gpu-dropout" --strategies "$DROPOUT" > "$OUT/dropout.log" 2>&1 &
DROPOUT_PID=$!

pack() {  # records, queries, configs and reports; no cache, weights or resumable state
    tar czf "$OUT/results.tgz.part" -C "$WORK" --exclude=cache --exclude='weights-*' --exclude=state.json \
        glas-gpu glas-gpu-dropout 2>/dev/null && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}
running() { for pid in $MAIN_PID $TTA_PID $DROPOUT_PID; do kill -0 $pid 2>/dev/null && return 0; done; return 1; }
while running; do
    if [ "$(elapsed)" -ge "$DEADLINE" ]; then
        echo "deadline: stopping the sweep after $(elapsed) s"
        pkill -TERM -f "focal_al bench" ; sleep 3; pkill -KILL -f "focal_al" ; pkill -KILL -f multiprocessing
        break
    fi
    sleep "$PACK_EVERY"; pack
    echo "$(elapsed) s: $(ls -d "$WORK"/glas-gpu*/runs/* 2>/dev/null | wc -l) runs started; $(grep -c '^job .* done' "$OUT/main.log") main jobs done"
done
wait 2>/dev/null
pack
echo "sweep ended after $(elapsed) s"; tail -n 5 "$OUT/main.log" "$OUT/tta.log" "$OUT/dropout.log"
