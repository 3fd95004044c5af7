"""ONNX Runtime's graph optimisation level for clients/onnx_predict.py: peak
memory and time per image, default ("all") against --low_memory ("basic").

    python bench/onnx_options.py MODEL.onnx [--rounds 8]

MODEL.onnx: an export of useModel.py --export_onnx; bench/predict_speed.py
leaves one of layer_50 at 224 px in its workdir
(/tmp/bench-predict/layer_50-224-exports/model.onnx).

1. Memory: each level in a fresh process (twice, alternating), one thread,
   no memory arena, as the client sets them: VmHWM after a few single images.
2. Time: the three levels as sessions in one process, taking turns for
   --rounds rounds of 4 single images: the median ms per image of each.
"""
import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

LEVELS = ("all", "extended", "basic")


def session(model, level):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = getattr(
        onnxruntime.GraphOptimizationLevel, f"ORT_ENABLE_{level.upper()}")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def pixels(sess):
    size = sess.get_inputs()[0].shape[1]
    return np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)


def peak_memory_child(model, level):
    """Runs in its own process: prints VmHWM (MB) after 5 single images."""
    sess = session(model, level)
    x = pixels(sess)
    for _ in range(5):
        sess.run(None, {"pixels": x})
    with open("/proc/self/status") as f:
        print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) // 1024)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--child", choices=LEVELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_memory_child(args.model, args.child)
    print("peak RSS (MB), fresh process per level, 1 image at a time:")
    for level in ("all", "basic", "all", "basic"):
        out = subprocess.run([sys.executable, __file__, args.model, "--child", level],
                             capture_output=True, text=True, check=True).stdout
        print(f"  {level:8s} {out.strip()}")
    sessions = {level: session(args.model, level) for level in LEVELS}
    x = pixels(sessions["all"])
    for sess in sessions.values():
        sess.run(None, {"pixels": x})
    times = {level: [] for level in LEVELS}
    for _ in range(args.rounds):
        for level, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(4):
                sess.run(None, {"pixels": x})
            times[level].append((time.perf_counter() - start) / 4 * 1000)
    print(f"ms per image, {args.rounds} rounds taking turns:")
    for level in LEVELS:
        median = statistics.median(times[level])
        print(f"  {level:8s} {median:6.1f}  ({median / statistics.median(times['all']):.2f}x all)")


if __name__ == "__main__":
    main()
