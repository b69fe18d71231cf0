#!/usr/bin/env bash
# The GPU benchmark in one command, inside a time budget (about 8 minutes in all):
#
#     benchmarks/gpu.sh OUT_DIR [WHEELS_DIR]
#
# runs benchmarks/run.py's flops, predict and matrix sections; OUT_DIR gets bench-gpu.json (rewritten
# after every row, so a run cut short keeps what it measured), bench-gpu.log, gpu.csv (nvidia-smi's
# view of the card) and shm.txt (the size of /dev/shm). BENCH_BUDGET (seconds, default 330) is when no
# new measurement starts; the command is stopped 150 s after it; BENCH_ARGS adds arguments to run.py
# (--quick for a smoke run). It runs from the source tree,
# without installing cdseg. On an offline machine that has PyTorch, Lightning and torchmetrics but not
# Hydra, WHEELS_DIR is a folder of wheels made where there is a network:
#
#     pip wheel --no-deps -w WHEELS_DIR hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
set -euo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT_DIR [WHEELS_DIR]}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # both folders as the caller named them, before moving to the source tree
wheels=${2:+$(cd "$2" && pwd)}
cd "$(dirname "$0")/.."
budget=${BENCH_BUDGET:-330}
python=${PYTHON:-python3}
if [ -n "$wheels" ]; then
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv >"$out/gpu.csv" ||
  { rm -f "$out/gpu.csv"; echo "nvidia-smi failed; going on" >&2; }
df -h /dev/shm | tee "$out/shm.txt" || true  # loader workers hand batches over through it: a small one fails host-side rows
# Everything the sections import, and a GPU: without one the full sizes would run for the whole budget
# on the host (BENCH_ARGS=--quick runs anyway, as a smoke run).
BENCH_ARGS=${BENCH_ARGS:-} "$python" -c "import os, cv2, hydra, lightning, PIL, torch, torchmetrics, torchvision
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'Lightning', lightning.__version__,
      'Hydra', hydra.__version__, 'GPU:', torch.cuda.is_available())
if not torch.cuda.is_available() and '--quick' not in os.environ['BENCH_ARGS'].split():
    raise SystemExit('no GPU is visible to torch: nothing measured')"
timeout --signal=INT --kill-after=20 $((${budget%.*} + 150)) "$python" benchmarks/run.py \
  --sections flops predict matrix --budget "$budget" --out "$out/bench-gpu.json" ${BENCH_ARGS:-} 2>&1 |
  tee "$out/bench-gpu.log"
