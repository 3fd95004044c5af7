"""How closely train.py --time_budget keeps its budget: the wall time of the
whole process, start-up and exit included, against the minutes given.

    python bench/time_budget.py --data_dir DIR --minutes 5 [-- TRAIN.PY FLAGS...]

Runs `python train.py --data_dir DIR --model_dir NEW --time_budget MINUTES`
(plus any flags after --) as a user does, and prints the budget, the wall
time, the overrun (wall minus budget; negative: it ended early), the steps
train.py planned and trained (model.json), the stages it ran and the CPU.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from fashion_mnist import cpu_name  # bench/, this script's folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="FlowIO.py's output")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="flags for train.py, after --")
    args = parser.parse_args()
    flags = [flag for flag in args.train_flags if flag != "--"]
    with tempfile.TemporaryDirectory(prefix="time-budget-") as work:
        model_dir = os.path.join(work, "models")
        command = [sys.executable, "train.py", "--data_dir", args.data_dir, "--model_dir",
                   model_dir, "--time_budget", f"{args.minutes:g}", *flags]
        started = time.time()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.time() - started
        if result.returncode:
            sys.exit(f"train.py failed:\n{result.stderr}")
        with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as f:
            training = json.load(f)["training"]
    plans = [line for line in result.stdout.splitlines() if line.startswith("time budget:")]
    print(f"budget {args.minutes * 60:.0f} s, wall {seconds:.1f} s, overrun "
          f"{seconds - args.minutes * 60:+.1f} s ({(seconds / (args.minutes * 60) - 1):+.1%})")
    stages = ", ".join(f"{stage['name']} to step {stage['end_step']}"
                       for stage in training["stages"])
    print(f"stages: {stages}; {len(plans)} plan lines, the last: "
          f"{plans[-1] if plans else 'none'}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; command: python bench/time_budget.py "
          f"--data_dir {args.data_dir} --minutes {args.minutes:g}"
          + (f" -- {' '.join(flags)}" if flags else ""))


if __name__ == "__main__":
    main()
