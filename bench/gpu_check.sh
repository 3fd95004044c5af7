#!/usr/bin/env bash
# The device checks, as one script, for a machine with a GPU (about 8 minutes
# on one H100/H200 once TensorFlow is installed):
#   1. TensorFlow sees the GPU, and what --precision auto chooses on it;
#   2. the demo pipeline trains on it in bfloat16 and in float16 (dynamic loss
#      scaling), both with XLA, and Evaluation.py scores each result in its
#      precision and in fp32 (correctness, not speed);
#   3. bench/train_speed.py: ResNet-50 images/s at batch 256, ours against
#      Keras (mixed_float16, mixed_bfloat16), fp16 and bf16, XLA, 224 px,
#      synthetic input;
#   4. bench/fine_tune_speed.py: the speed of each fine-tuning stage (the
#      head's features and classifier, last_stage, all) at 224 px, fp16 and
#      bf16, from TF-slim's resnet_v1_50 graph (random weights: no network);
#   5. only where TensorFlow sees more than one GPU: train.py's ResNet-50
#      (layer_50, 224 px, float16 + XLA, batch 256 per GPU) for 2 minutes on
#      one GPU and on all of them; images/s of each, their ratio the speed-up
#      (BENCHMARKS.md models the expected one; NVIDIA publishes 7.3x at 8).
# Everything goes to ${OUT:-/tmp/gpu_check}. BENCHMARKS.md, "Training on a GPU"
# says what was expected. On a CPU `QUICK=1 bash bench/gpu_check.sh` runs the
# same steps at toy sizes to check the script itself (bf16 needs AVX-512 there).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if [ "${QUICK:-0}" = 1 ]; then epochs=0.2; batch=4; size=32; steps=1; else epochs=3; batch=256; size=224; steps=20; fi

python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" \
    2>&1 | tail -1 | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>/dev/null \
    >> "$out/devices.txt" || true
python -c "from suite.plumbing import environment; environment.configure()
from suite.hardware.precision import choose_precision
print('auto for training:', choose_precision())
print('auto for prediction:', choose_precision(purpose='prediction'))" \
    2>&1 | grep "^auto" | tee -a "$out/devices.txt"

python FlowIO.py --output_dir "$out/tfrecords" > "$out/flowio.txt" 2>&1
for precision in bf16 fp16; do
    python train.py --data_dir "$out/tfrecords" --model_dir "$out/models_$precision" \
        --epochs "$epochs" --precision "$precision" --xla > "$out/train_$precision.txt" \
        2> "$out/train_$precision.err" || { tail -20 "$out/train_$precision.err"; exit 1; }
    # The first lines (the start, the precision and why) and the end of training.
    { head -2 "$out/train_$precision.txt"; tail -4 "$out/train_$precision.txt"; } | sed "s/^/$precision: /"
    for evaluated in "$precision" fp32; do
        python Evaluation.py --data_dir "$out/tfrecords" --model_dir "$out/models_$precision" \
            --precision "$evaluated" 2>&1 | grep -i "^precision\|top-1" \
            | sed "s/^/$precision model, evaluated in $evaluated: /" | tee -a "$out/evaluation.txt"
    done
done

python bench/train_speed.py --batch_size "$batch" --image_size "$size" --steps "$steps" \
    --rounds 1 --precision fp16,bf16 --xla 2>&1 | tee "$out/train_speed.txt"

if [ "${QUICK:-0}" = 1 ]; then tune="--num_images 30 --epochs 0.5"; else tune="--num_images 600"; fi
# shellcheck disable=SC2086  # $tune is two flags
python bench/fine_tune_speed.py $tune --precisions fp16,bf16 --work_dir "$out/fine_tune" 2>&1 \
    | tee "$out/fine_tune_speed.txt"

gpus=$(python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" \
    2>/dev/null | tail -1)
if [ "${gpus:-0}" -gt 1 ]; then
    # --epochs far beyond 2 minutes; timeout sends SIGINT, train.py saves and stops.
    for n in 1 "$gpus"; do
        timeout -s INT 120 python train.py --data_dir "$out/tfrecords" \
            --model_dir "$out/models_${n}gpu" --model layer_50 --image_size 224 \
            --batch_size "$batch" --num_gpus "$n" --epochs 100000 --eval_every_epochs 0 \
            --save_every_secs 100000 --log_every_steps 10 --precision fp16 --xla \
            > "$out/multi_gpu_$n.log" 2>&1 || true
        echo "$n GPU(s): $(grep -o '[0-9.]* img/s' "$out/multi_gpu_$n.log" | tail -3 | tr '\n' ' ')" \
            | tee -a "$out/multi_gpu.txt"
    done
fi
