#!/usr/bin/env bash
# The device checks, as one script, for a machine with a GPU (about 6 minutes
# on one H100/H200 once TensorFlow is installed):
#   1. TensorFlow sees the GPU;
#   2. the demo pipeline trains on it with --mixed_precision --xla and
#      Evaluation.py scores the result (correctness, not speed);
#   3. bench/train_speed.py: ResNet-50 images/s at batch 256, ours against
#      Keras, float16 + XLA, 224 px, synthetic input.
# Everything goes to ${OUT:-/tmp/gpu_check}. BENCHMARKS.md, "Training on a GPU"
# says what was expected. On a CPU `QUICK=1 bash bench/gpu_check.sh` runs the
# same steps at toy sizes to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if [ "${QUICK:-0}" = 1 ]; then epochs=0.2; batch=4; size=32; steps=1; else epochs=3; batch=256; size=224; steps=20; fi

python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))" \
    2>&1 | tail -1 | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null >> "$out/devices.txt" || true

python FlowIO.py --output_dir "$out/tfrecords" > "$out/flowio.txt" 2>&1
python train.py --data_dir "$out/tfrecords" --model_dir "$out/models" --epochs "$epochs" \
    --mixed_precision --xla 2>&1 | tail -5 | tee "$out/train.txt"
python Evaluation.py --data_dir "$out/tfrecords" --model_dir "$out/models" 2>&1 \
    | grep -i "top-1\|top-5" | tee "$out/evaluation.txt"

python bench/train_speed.py --batch_size "$batch" --image_size "$size" --steps "$steps" \
    --rounds 1 --mixed_precision --xla 2>&1 | tee "$out/train_speed.txt"
