"""Per-step overhead of data-parallel training on one machine: train.py as one
process on one device, as one process with 2 replicas, and as 2 worker
processes on 127.0.0.1, all at the same global batch, side by side.

    python bench/distributed_overhead.py [--model layer_50] [--image_size 64]
                                         [--global_batch 16] [--steps 30] [--rounds 2]
                                         [--data_dir DIR]

The three share this machine's cores, so the arithmetic of a step is the same
in all three and what differs is the overhead: the replicas' all-reduce,
their synchronisation, and (for the workers) gRPC over loopback and two
processes' thread pools on the same cores. It says nothing about the speed-up
of real devices; BENCHMARKS.md models that from the gradient volume. A fourth
row, one device at half the batch (one replica's share), shows how much of the
difference is the smaller per-replica batch rather than the synchronisation:
two replicas computing one after the other would take twice its time.

Each run is train.py itself, reading TFRecords (the colour demo data, made
here unless --data_dir is given), with validation and checkpoints out of the
way; its progress lines give images/s per window of 5 steps, the first window
(warm-up) dropped. The configurations take turns, round after round, so that
drift on a shared machine hits all of them.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 5


sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
from suite.plumbing import environment  # noqa: E402

environment.configure()  # the tests' helpers load TensorFlow

from helpers import free_ports, make_colour_images  # noqa: E402  (the tests' helpers)


def make_data(root):
    image_dir = make_colour_images(os.path.join(root, "images"), per_class=64)
    data_dir = os.path.join(root, "tfrecords")
    subprocess.run([sys.executable, os.path.join(REPO, "FlowIO.py"), "--image_dir", image_dir,
                    "--output_dir", data_dir], check=True, capture_output=True)
    return data_dir


def train_command(args, data_dir, model_dir, batch, num_train):
    epochs = args.steps * args.global_batch / num_train
    return [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", data_dir,
            "--model_dir", model_dir, "--model", args.model, "--image_size",
            str(args.image_size), "--batch_size", str(batch), "--epochs", f"{epochs:.6f}",
            "--seed", "1", "--eval_every_epochs", "0", "--log_every_steps", str(WINDOW),
            "--save_every_steps", str(10 * args.steps), "--save_every_secs", "1e9",
            # One precision for all: auto picks bf16 on some CPUs, but a cluster
            # of CPU workers trains in fp32 (suite.training.run.training_precision).
            "--precision", "fp32"]


def step_seconds(output, global_batch):
    rates = [float(r) for r in re.findall(r"([\d.]+) img/s", output)]
    if len(rates) < 2:
        raise SystemExit(f"too few progress lines:\n{output[-3000:]}")
    return global_batch / statistics.median(rates[1:])  # the first window warms up


def run(args, config, data_dir, num_train, workdir):
    model_dir = tempfile.mkdtemp(dir=workdir)
    if config in ("1 process, 1 device", "(1 device, half batch)"):
        batch = args.global_batch // (2 if "half" in config else 1)
        command = train_command(args, data_dir, model_dir, batch, num_train)
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        outputs = [result]
    elif config == "1 process, 2 replicas":
        command = train_command(args, data_dir, model_dir, args.global_batch // 2, num_train)
        result = subprocess.run(command + ["--num_cpu_replicas", "2"], capture_output=True,
                                text=True, cwd=REPO)
        outputs = [result]
    else:
        hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
        command = train_command(args, data_dir, model_dir, args.global_batch // 2, num_train)
        workers = [subprocess.Popen(command + ["--worker_hosts", hosts, "--task_index", str(i)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=REPO) for i in range(2)]
        outputs = [subprocess.CompletedProcess(w.args, 0, *w.communicate()) for w in workers]
        for w, o in zip(workers, outputs):
            o.returncode = w.returncode
    for o in outputs:
        if o.returncode != 0:
            raise SystemExit(f"{config} failed:\n{o.stdout[-2000:]}\n{o.stderr[-2000:]}")
    return step_seconds(outputs[0].stdout, batch if "half" in config else args.global_batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="layer_50")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--global_batch", type=int, default=16, help="even: 2 x per replica")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    configs = ("1 process, 1 device", "1 process, 2 replicas", "2 workers on 127.0.0.1",
               "(1 device, half batch)")
    with tempfile.TemporaryDirectory(prefix="distributed-overhead-") as workdir:
        data_dir = args.data_dir or make_data(workdir)
        import json
        with open(os.path.join(data_dir, "dataset.json"), encoding="utf-8") as f:
            num_train = json.load(f)["num_examples"]["train"]
        times = {c: [] for c in configs}
        for _ in range(args.rounds):
            for config in configs:
                times[config].append(run(args, config, data_dir, num_train, workdir))
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{args.model} at {args.image_size} px, global batch {args.global_batch}, "
          f"{args.steps} steps x {args.rounds} rounds; {os.cpu_count()} cores, {cpu}")
    # Ratios within each round (the same minutes of a shared machine), then
    # their median over the rounds.
    base = times[configs[0]]
    for config in configs:
        ratios = [t / b for t, b in zip(times[config], base)]
        print(f"{config:<24} {1000 * statistics.median(times[config]):8.1f} ms/step  "
              f"{statistics.median(ratios):5.2f}x  (rounds: "
              f"{', '.join(f'{1000 * t:.0f} ms {r:.2f}x' for t, r in zip(times[config], ratios))})")


if __name__ == "__main__":
    main()
