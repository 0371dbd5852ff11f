#!/usr/bin/env bash
# One device-tool call: naive vs shared on Qwen2.5-VL-3B and -7B shapes, nf4, 448x448,
# N=32 votes, G=16 trained, 16-token answers. Wheels travel in .whl (bitsandbytes, transformers).
# SIZES="7b" SKIP="train_naive,..." narrow it down.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes; print(torch.__version__, transformers.__version__, peft.__version__, bitsandbytes.__version__)" | tee -a "$OUT/gpu.txt"
for size in ${SIZES:-3b 7b}; do
  timeout 300 python3 bench/bench_step.py --size $size --precision 4bit --n 32 --g 16 --tokens 16 --side 448 \
    --repeats 2 --skip ${SKIP:-train_naive} --out "$OUT/bench.jsonl" 2>&1 | grep -vE "Warning|warn|Loading weights|Writing model" | tee -a "$OUT/log.txt"
  rm -rf /tmp/ttrv_bench_${size}_448
done
