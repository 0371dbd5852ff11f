#!/usr/bin/env bash
# One device-tool call: Qwen2.5-VL-3B and -7B shapes (random weights), nf4, 448x448,
# N=32 votes, G=16 trained, 16-token answers.
#   bench_step.py: sampling (generate vs our eager vs our CUDA-graph decode, ms per token),
#                  training (packed row vs replicated cache vs naive + checkpointing), the TTRV step
#   bench_trl.py:  our step vs TRL GRPOTrainer on the 3B shape (if trl's wheels travelled)
#   bench_first_votes.py: the app's Run -> first votes on the 3B shape, the first run (load) and later
#                  ones (the model kept; the before-evaluation reused or not); FIRST_VOTES=0 skips it
#   photos:        first, the model a GPU Space opens on (model_menu.REAL_DEFAULT, InternVL3-2B) on the bundled
#                  photos through the CLI, real weights, when they are in the Hugging Face cache (this machine
#                  has no network; otherwise one line says so); PHOTOS=0 skips it
# Wheels travel in .whl/ (bitsandbytes, transformers, trl and what it needs).
# SIZES="7b" SKIP=... TRL=0 narrow it down.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes; print(torch.__version__, transformers.__version__, peft.__version__, bitsandbytes.__version__)" | tee -a "$OUT/gpu.txt"
quiet() { grep -vE "Warning|warn|Loading weights|Writing model" | tee -a "$OUT/log.txt"; }
if [ "${PHOTOS:-1}" = 1 ]; then  # real weights on real photos: before accuracy, after accuracy, invalid replies
  model=$(python3 -c "from ttrv_core.app.model_menu import REAL_DEFAULT; print(REAL_DEFAULT)")
  if python3 -c "import sys; from ttrv_core.app.model_menu import REAL_DEFAULT as m, weights_cached as c; sys.exit(not c(m))"
  then
    start=$(date +%s); rm -rf /tmp/ttrv_photos_run
    timeout ${PHOTOS_TIMEOUT:-300} python3 -m ttrv_core --images assets/examples/photos --task choice --model "$model" \
      --out /tmp/ttrv_photos_run 2>&1 | quiet
    mkdir -p "$OUT/photos"; cp /tmp/ttrv_photos_run/*.{csv,json,jsonl} "$OUT/photos/" 2>/dev/null  # not the adapter
    echo "photos $model: $(( $(date +%s) - start )) s (results in photos/)" | tee -a "$OUT/log.txt"
  else
    echo "photos $model: NOT RUN: its weights are not in this machine's Hugging Face cache (${HF_HUB_CACHE:-${HF_HOME:-~/.cache/huggingface}/hub}) and this machine has no network; put them there (huggingface-cli download $model) to measure it" | tee -a "$OUT/log.txt"
  fi
fi
SKIP3=${SKIP:-sample_naive,sample_shared_generate,sample_shared_no_lora,train_naive,train_shared_cache}
SKIP7=${SKIP7:-$SKIP3,sample_shared_eager,sample_shared_peft,train_shared_peft}
for size in ${SIZES:-3b 7b}; do
  skip=$SKIP3; [ "$size" = 7b ] && skip=$SKIP7
  start=$(date +%s)
  timeout ${STEP_TIMEOUT:-180} python3 bench/bench_step.py --size $size --precision 4bit --n 32 --g 16 --tokens 16 \
    --side 448 --repeats 2 --skip $skip --out "$OUT/bench.jsonl" 2>&1 | quiet
  echo "bench_step $size: $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
  if [ "$size" = 3b ] && [ "${TRL:-1}" = 1 ]; then  # TRL and our step in one process, after bench_step
    start=$(date +%s)
    timeout ${TRL_TIMEOUT:-170} python3 bench/bench_trl.py --size 3b --precision 4bit --n 32 --g 16 --tokens 16 \
      --side 448 --repeats 2 --warmup 1 --skip ${TRL_SKIP:-ours_naive,ours_naive_n=g} --out "$OUT/trl.jsonl" 2>&1 | quiet
    echo "bench_trl 3b: $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
  fi
  if [ "$size" = 3b ] && [ "${FIRST_VOTES:-1}" = 1 ]; then  # Run -> first votes, first and later runs (kept.run
    # through the app where gradio is installed, else on its own: the line's "path" says which)
    start=$(date +%s)
    timeout ${FV_TIMEOUT:-200} python3 bench/bench_first_votes.py --model /tmp/ttrv_bench_3b_448 \
      --images assets/examples/digits --steps 1 --out "$OUT/first_votes.jsonl" 2>&1 | quiet
    echo "bench_first_votes 3b: $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
  fi
  rm -rf /tmp/ttrv_bench_${size}_448
done
