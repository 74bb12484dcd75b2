#!/usr/bin/env bash
# The paper's GPU recipe (docs/training.md), shortened to fit a lent GPU's ten minutes, on
# CHAOS T2-SPIR fold 0: train a ResNet-101 TPM encoder on the training half (unlabelled, setting
# 1) for TRAIN_MIN minutes of the 50 000-step schedule, then `evaluate paper` fold 0 (Table 1,
# EP2, 1 and 5 prototypes) and the segment CLI's time on the GPU for it and the filter bank.
# Every figure goes to $OUT with the GPU's name, in at most 8 files (what the device tool returns:
# log.txt with the machine, train.log, losses.csv, card.json, results.md, tables.csv,
# segment.md, and model.pt when it is under 15 MB, as a hybrid's is: the tool returns files of
# 16 MB at most, so a ResNet stays there). Nothing in the project depends on this. Measured on
# an H200: benchmarks/RESULTS-gpu.md.
#
#   here:        bash benchmarks/gpu/pack.sh        (once: .devpack/, see there)
#   the device:  run(command="bash benchmarks/gpu/short_schedule.sh", carry=[".devpack"],
#                    timeout_s=600)
#   a dry run on this CPU: DEVICE=cpu ENCODER=resnet18 TRAIN_MIN=0.3 OUT=/tmp/gpu \
#                    bash benchmarks/gpu/short_schedule.sh
#   the CPU's hybrid recipe instead, for 5 min: ENCODER=hybrid TRAIN_MIN=5 \
#                    TRAIN_ARGS="--normalisation robust --lr 1e-2 --max-classes 5" ...
# No ImageNet file can be fetched there, so the ResNet-101 starts from random weights (the
# paper starts from ImageNet): the figures show what a few minutes of GPU training give, not
# the paper's numbers.
set -uo pipefail
OUT=${OUT:-gpu-out}
PACK=${PACK:-.devpack}
DEVICE=${DEVICE:-cuda}
ENCODER=${ENCODER:-resnet101}
TRAIN_MIN=${TRAIN_MIN:-4}
WORKERS=${WORKERS:-12}
EVAL_S=${EVAL_S:-120}
BENCH_S=${BENCH_S:-100}
TRAIN_ARGS=${TRAIN_ARGS:---lr 1e-3}  # after the recipe's own flags, so these win
mkdir -p "$OUT"
log="$OUT/log.txt"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$log"; }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 1. what the machine lacks, from the pack
if ! python3 -c "import SimpleITK, cc3d" 2>/dev/null; then
    mkdir -p /tmp/site && tar -xJf "$PACK/site.tar.xz" -C /tmp/site || exit 3
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
    say "SimpleITK and cc3d from $PACK/site.tar.xz"
fi
DATA=${DATA:-}
if [ -z "$DATA" ]; then
    if [ -f "$PACK/chaos_t2spir.tar.xz" ]; then
        mkdir -p /tmp/data && tar -xJf "$PACK/chaos_t2spir.tar.xz" -C /tmp/data || exit 3
        DATA=/tmp/data/chaos_t2spir
    else
        DATA=../shared/data/chaos_t2spir
    fi
fi
say "data: $DATA ($(ls "$DATA" | grep -c _mr) MR volumes)"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    lscpu | grep -m1 'Model name'
    nproc
} 2>&1 | tee -a "$log"

# 2. train: the paper's schedule (SGD lr 1e-3, 50 000 steps, x0.95 per 1000) cut by time
run=/tmp/gpu-run
rm -rf "$run" /tmp/gpu-eval
say "train $ENCODER for $TRAIN_MIN min on $DEVICE"
python3 -m napari_tpm.train train "$DATA" --holdout chaos_t2spir:0 --encoder "$ENCODER" \
    --init none --steps 50000 --device "$DEVICE" --amp --workers "$WORKERS" \
    --checkpoint-every 1000 --time-limit "$TRAIN_MIN" --analysis-episodes 200 \
    --cache-dir /tmp/sv-cache --quiet --out "$run/fold0" $TRAIN_ARGS 2>&1 | tee -a "$OUT/train.log"
if [ -f "$run/fold0/model.pt" ] && [ "$(stat -c %s "$run/fold0/model.pt")" -lt 15000000 ]; then
    cp "$run/fold0/model.pt" "$OUT/"
fi
cp "$run/fold0/losses.csv" "$OUT/" 2>/dev/null  # the tool returns 8 files: no plots
python3 - "$run/fold0/model.pt" "$OUT/card.json" <<'PY' 2>&1 | tee -a "$log"
import json, sys
from napari_tpm.checkpoints import load_model
m = load_model(sys.argv[1])
json.dump(m.card, open(sys.argv[2], "w"), indent=1, default=str)
t = m.card.get("training", {})
print("trained:", {k: t.get(k) for k in ("steps", "seconds", "bf16", "final_losses")})
PY
say "trained"

# 3. the paper's Table 1 on fold 0 (EP2, setting 1)
timeout "$EVAL_S" python3 -m napari_tpm.evaluate paper --dataset chaos_t2spir --data "$DATA" \
    --checkpoints "$run/fold{fold}/model.pt" --folds 0 --prototypes 1 5 --no-multiclass \
    --device "$DEVICE" --threads 8 --quiet --out /tmp/gpu-eval 2>&1 | tail -40 | tee -a "$log"
say "evaluated (rc ${PIPESTATUS[0]})"
cp /tmp/gpu-eval/results.md /tmp/gpu-eval/tables.csv "$OUT/" 2>/dev/null

# 4. the segment CLI and session on the GPU, trained model and filter bank
for ck in filterbank "$run/fold0/model.pt"; do  # the product's default first
    timeout "$BENCH_S" python3 benchmarks/bench_segment.py --checkpoint "$ck" \
        --device "$DEVICE" --out "$OUT/segment.md" > /dev/null 2>> "$log"
    say "bench_segment $ck (rc $?)"
done
say "done"
