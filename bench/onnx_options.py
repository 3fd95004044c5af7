"""How clients/onnx_predict.py loads and runs its ONNX Runtime session, step by
step: peak memory, page faults and time per image.

    python bench/onnx_options.py MODEL.onnx [--rounds 8] [--threads N]

MODEL.onnx: an export of useModel.py --export_onnx (its labels file beside
it); bench/predict_speed.py leaves one of layer_50 at 224 px in its workdir
(/tmp/bench-predict/layer_50-224-exports/model.onnx).

1. Memory: each step in a fresh process (the steps twice, in turns), model
   only, random pixels; each step adds one thing to the one before:
     plain     the model file in a session with full optimisations, no
               arena, memory patterns, a batch in one run (the client before
               issue 16's memory work)
     malloc    glibc's mmap threshold held at 128 KiB while the model loads,
               then 32 MiB with a 64 MiB trim threshold (load_session)
     resaved   the session made from the copy ONNX Runtime re-saves with the
               weights in a file of their own (load_session)
     arena     the memory arena on, memory patterns off
     client    runs of onnx_predict.RUN_IMAGES: OnnxClassifier itself
   Printed: VmHWM after loading, after 5 single images and after 2 batches
   of 32; page faults (minor) per single image and per batch once warm: each
   one is a page the kernel maps and zeroes, ~1-4 us.
2. Time: plain, the client and variants of it as sessions in one process,
   taking turns for --rounds rounds (4 single images, then one batch of 32,
   each): the median ms per image. The process's malloc settings are the
   client's (set when its session loads), for plain too.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "clients"))

import onnx_predict  # noqa: E402

STEPS = ("plain", "malloc", "resaved", "arena", "client")
BATCH = 32


class StepClassifier(onnx_predict.OnnxClassifier):
    """The client with only the steps up to `step` (class attribute)."""
    step = "client"

    def _load_session(self, onnxruntime, model_path, options):
        step = STEPS.index(self.step)
        if step < STEPS.index("arena"):
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = True
        if step < STEPS.index("resaved"):
            mallopt = onnx_predict._glibc_mallopt() if step >= STEPS.index("malloc") else None
            if mallopt:
                mallopt(onnx_predict._M_MMAP_THRESHOLD, 128 << 10)
            try:
                return onnxruntime.InferenceSession(model_path, options,
                                                    providers=onnx_predict.PROVIDERS)
            finally:
                if mallopt:
                    mallopt(onnx_predict._M_MMAP_THRESHOLD, 32 << 20)
                    mallopt(onnx_predict._M_TRIM_THRESHOLD, 64 << 20)
        return onnx_predict.load_session(onnxruntime, model_path, options)


def classifier(model, step, threads=None, run_images=None):
    kind = type(f"Step_{step}", (StepClassifier,), {
        "step": step, "run_images": run_images if step == "client" else None})
    return kind(model, threads=threads)


def pixels(size, count, seed=0):
    """Random float32 pixels, made without a float64 temporary (it would count
    in the peak)."""
    return np.random.default_rng(seed).random((count, size, size, 3), np.float32) * 255


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))


def faults_per_call(function, calls):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / calls


def memory_child(model, step, threads):
    """Runs in its own process: prints one line for the step."""
    start = time.perf_counter()
    model_classifier = classifier(model, step, threads, onnx_predict.RUN_IMAGES)
    load_s = time.perf_counter() - start
    loaded = vm_hwm_mb()
    one = pixels(model_classifier.image_size, 1)
    for _ in range(2):
        model_classifier.probabilities(one)
    single_faults = faults_per_call(lambda: model_classifier.probabilities(one), 3)
    single = vm_hwm_mb()
    batch = pixels(model_classifier.image_size, BATCH)
    model_classifier.probabilities(batch)
    batch_faults = faults_per_call(lambda: model_classifier.probabilities(batch), 1)
    print(f"  {step:8s} {load_s:5.2f} s  {loaded:5.0f} {single:5.0f} {vm_hwm_mb():5.0f} MB   "
          f"{single_faults:6.0f} {batch_faults:8.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime's threads (default: the client's, one per core)")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return memory_child(args.model, args.child, args.threads)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"1. memory, a fresh process per step (model only):\n"
          f"  step      load      VmHWM: loaded, 1 image, batch {BATCH}   "
          f"page faults: per image, per batch")
    for step in STEPS + STEPS:
        command = [sys.executable, __file__, args.model, "--child", step]
        if args.threads:
            command += ["--threads", str(args.threads)]
        print(subprocess.run(command, capture_output=True, text=True,
                             check=True).stdout.rstrip())

    contenders = {
        "plain": classifier(args.model, "plain", args.threads),
        "client": classifier(args.model, "client", args.threads, onnx_predict.RUN_IMAGES),
        "client, runs of 4": classifier(args.model, "client", args.threads, 4),
        "client, one run": classifier(args.model, "client", args.threads, None),
        "client, 1 thread": classifier(args.model, "client", 1, onnx_predict.RUN_IMAGES),
    }
    size = contenders["plain"].image_size
    one, batch = pixels(size, 1), pixels(size, BATCH)
    for contender in contenders.values():
        contender.probabilities(one)
        contender.probabilities(batch)
    times = {name: {"single": [], "batch": []} for name in contenders}
    loads = []
    for round_index in range(args.rounds):
        order = list(contenders) if round_index % 2 == 0 else list(contenders)[::-1]
        for name in order:
            for _ in range(4):
                start = time.perf_counter()
                contenders[name].probabilities(one)
                times[name]["single"].append(time.perf_counter() - start)
            start = time.perf_counter()
            contenders[name].probabilities(batch)
            times[name]["batch"].append((time.perf_counter() - start) / BATCH)
        loads.append(os.getloadavg()[0])
    print(f"2. ms per image, one process, {args.rounds} rounds taking turns "
          f"(load average {min(loads):.1f}-{max(loads):.1f}):")
    reference = {kind: statistics.median(times["plain"][kind]) for kind in ("single", "batch")}
    for name, measured in times.items():
        single, per_image = (statistics.median(measured[kind]) for kind in ("single", "batch"))
        print(f"  {name:18s} 1 image {single * 1e3:6.1f} ({single / reference['single']:.2f}x "
              f"plain)   batch of {BATCH} {per_image * 1e3:6.1f} per image "
              f"({per_image / reference['batch']:.2f}x plain)")


if __name__ == "__main__":
    main()
