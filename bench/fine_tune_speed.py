"""Speed of each fine-tuning stage of train.py at 224 px, fp32 and bf16 side by side.

    python bench/fine_tune_speed.py [--num_images 300] [--epochs 4] [--precisions fp32,bf16]
                                    [--modes head,last_stage,all] [--work_dir /tmp/finetune-speed]

Images: bench/photos.py's 800x600 JPEGs (--num_images, 5 classes), FlowIO.py'd
once into WORK/records. Weights (no network here): TF-slim's resnet_v1_50
graph with random initial weights (the speed is the same), saved in V1 format
where --pretrained looks, WORK/cache/resnet_v1_50_2016_08_28/resnet_v1_50.ckpt.
Each mode and precision is one run (output in WORK/logs/) of `python train.py
--data_dir WORK/records --model_dir NEW --pretrained on --pretrained_cache
WORK/cache --precision P --fine_tune MODE --log_every_steps 5
--eval_every_epochs 0`, plus --epochs E for last_stage and all (the stage
through the network); the precisions take turns (fp32 head, bf16 head, fp32
last_stage, ...) so a shared machine's drift falls on both; bf16 is skipped,
saying why, where suite.hardware.precision refuses it on this CPU. Measured:
the forward pass for the head's features (train.py's "the network's features
of ..." line) and the head's training on those cached rows (of the head run,
else of stage 1 of another), and stage 2 of last_stage and all; of progress
lines, the median after the stage's first (which holds the warm-up). Printed:
img/s, the minutes they imply for 5,000 training photos (features of 2 views
of each, the head's epochs over those rows, for last_stage and all 10 epochs
through the network: train.py's defaults), the CPU and the commands.
"""
import argparse
import multiprocessing
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time

from photos import describe, photo_dir  # bench/ is the script's folder, on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # resnet, suite (for the checkpoint writer and the precision check)

MODES = ("head", "last_stage", "all")
PRECISIONS = ("fp32", "bf16")
CHECKPOINT = os.path.join("resnet_v1_50_2016_08_28", "resnet_v1_50.ckpt")
PHOTOS = 5000
VIEWS = 2  # suite.training.stages.views_for(5000): the head's augmented views of each image
NETWORK_EPOCHS = 10  # train.py's default epochs of the stage through the network
STEP = re.compile(r"^step \d+/\d+ .* ([\d.]+) img/s", re.MULTILINE)
FEATURES = re.compile(r"^the network's features of .* ([\d.]+) img/s", re.MULTILINE)
HEAD_EPOCHS = re.compile(r"cached features \(\d+ views? of each image\): ([\d.]+) epoch")


def cpu():
    """The CPU's model name and which bfloat16 flags it has."""
    info = pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8")
    name = re.search(r"^model name\s*:\s*(.*)$", info, re.MULTILINE)
    has = [flag for flag in ("avx512_bf16", "amx_bf16") if re.search(rf"\b{flag}\b", info)]
    return (f"{name.group(1) if name else 'unknown CPU'}, {os.cpu_count()} cores, "
            + (f"has {' and '.join(has)}" if has else "has neither avx512_bf16 nor amx_bf16"))


def _write_checkpoint(path):
    """TF-slim's resnet_v1_50 (as tests/helpers.py's slim_arg_scope builds it:
    our batch norm, slim's 'SAME' max pooling), initial weights, saved in V1
    format. Run in a child process, so this one holds no TensorFlow."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    import tf_slim as slim
    from tf_slim.nets import resnet_v1

    import resnet

    tf.get_logger().setLevel("ERROR")  # not V1's deprecation notice
    with tf.Graph().as_default():
        with slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu,
                            normalizer_fn=resnet.batch_norm,
                            normalizer_params={"is_training": False}), \
                slim.arg_scope([slim.max_pool2d], padding="SAME"):
            resnet_v1.resnet_v1_50(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]),
                                   num_classes=1000, is_training=False)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1).save(
                session, path, write_meta_graph=False, write_state=False)


def pretrained_cache(work_dir):
    """WORK/cache, holding the checkpoint (written once, through a temporary name)."""
    cache = os.path.join(work_dir, "cache")
    target = os.path.join(cache, CHECKPOINT)
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = os.path.join(work_dir, "resnet_v1_50.ckpt.partial")
        child = multiprocessing.get_context("spawn").Process(target=_write_checkpoint,
                                                             args=(partial,))
        child.start()
        child.join()
        if child.exitcode:
            sys.exit(f"error: writing the checkpoint failed (exit code {child.exitcode})")
        os.replace(partial, target)
        print(f"wrote {target}", flush=True)
    return cache


def records(work_dir, num_images):
    """WORK/records: FlowIO.py of the photos, made again only for another set."""
    photos = photo_dir(num_images, 5, 0)
    print(describe(photos), flush=True)
    folder = os.path.join(work_dir, "records")
    stamp = pathlib.Path(folder + ".made-from")  # beside: FlowIO.py's files only in folder
    if stamp.exists() and stamp.read_text(encoding="utf-8") == photos:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    result = subprocess.run([sys.executable, "FlowIO.py", "--image_dir", photos, "--output_dir",
                             folder], cwd=REPO, check=False, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: FlowIO.py exited with {result.returncode}:\n{result.stderr[-2000:]}")
    stamp.write_text(photos, encoding="utf-8")
    return folder


def bf16_problem():
    """Why this CPU cannot train in bf16 (choose_precision's error), or None."""
    code = "from suite.hardware.precision import choose_precision; choose_precision('bf16')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False,
                            capture_output=True, text=True)
    if result.returncode:
        return (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return None


def train(args, data, cache, precision, mode):
    """One train.py run; (the command, its output)."""
    name = f"{precision}-{mode}"
    model_dir = os.path.join(args.work_dir, "models", name)
    shutil.rmtree(model_dir, ignore_errors=True)
    flags = ["--pretrained", "on", "--pretrained_cache", cache, "--precision", precision,
             "--fine_tune", mode, "--log_every_steps", str(args.log_every_steps),
             "--eval_every_epochs", "0"] + ([] if mode == "head" else ["--epochs", args.epochs])
    command = [sys.executable, "train.py", "--data_dir", data, "--model_dir", model_dir, *flags]
    log = pathlib.Path(args.work_dir, "logs", name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = subprocess.run(command, cwd=REPO, check=False, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log.write_text(output := result.stdout, encoding="utf-8")
    if result.returncode:
        sys.exit(f"error: train.py exited with {result.returncode} ({log}):\n{output[-2000:]}")
    print(f"{name}: {time.time() - started:.0f} s, output in {log}", flush=True)
    return " ".join(["python train.py --data_dir REC --model_dir NEW", *flags]), output


def progress_speed(text, what):
    """The median img/s of the progress lines in text, the first left out
    where there are more (a note when there are not); None without any."""
    rates = [float(rate) for rate in STEP.findall(text)]
    if len(rates) == 1:
        print(f"note: one progress line for {what}: its img/s includes the warm-up "
              f"(give more --epochs or --num_images)", flush=True)
    return statistics.median(rates[1:] if len(rates) > 1 else rates) if rates else None


def measure(name, mode, output):
    """{what: img/s} of one run (and the head's epochs): the head's from its
    stage (the whole run for head, else stage 1), and mode's from stage 2."""
    head, _, network = output.partition("\nstage 2 of")
    if mode != "head" and not network:
        sys.exit(f"error: no 'stage 2 of' line in train.py's output for {name}")
    features, epochs = FEATURES.findall(head), HEAD_EPOCHS.findall(head)
    speeds = {"features": float(features[-1]) if features else None,
              "head": progress_speed(head.split("the network's features of")[-1], f"{name} head"),
              "head_epochs": float(epochs[-1]) if epochs else 20.0}
    return speeds if mode == "head" else {**speeds, mode: progress_speed(network, name)}


def minutes(speeds):
    """{mode: minutes for PHOTOS training photos} from one precision's speeds."""
    if not speeds.get("features") or not speeds.get("head"):
        return {}
    head = (PHOTOS * VIEWS / speeds["features"]
            + speeds["head_epochs"] * PHOTOS * VIEWS / speeds["head"]) / 60
    return {"head": head, **{mode: head + NETWORK_EPOCHS * PHOTOS / speeds[mode] / 60
                             for mode in ("last_stage", "all") if speeds.get(mode)}}


def print_tables(speeds, commands):
    def cell(value, form=".1f"):
        return "n/a" if value is None else format(value, form)

    precisions = list(speeds)
    rows = [("features", "head: the network's forward pass (features)"),
            ("head", "head: the classifier on cached features (rows/s)"),
            ("last_stage", "last_stage: block 4 + classifier (stage 2)"),
            ("all", "all: every layer (stage 2)")]
    print(f"\n| stage | {' | '.join(p + ' img/s' for p in precisions)} | bf16/fp32 |")
    print("| --- " * (len(precisions) + 2) + "|")
    for key, label in rows:
        values = [speeds[p].get(key) for p in precisions]
        fp32, bf16 = speeds.get("fp32", {}).get(key), speeds.get("bf16", {}).get(key)
        ratio = cell(bf16 / fp32, ".2f") if fp32 and bf16 else "n/a"
        print(f"| {label} | {' | '.join(cell(v) for v in values)} | {ratio} |")
    implied = {p: minutes(speeds[p]) for p in precisions}
    print(f"\nimplied minutes for {PHOTOS:,} training photos ({VIEWS} views for the features; "
          f"{NETWORK_EPOCHS} epochs through the network for last_stage and all):\n")
    print(f"| fine_tune | {' | '.join(p + ' minutes' for p in precisions)} |")
    print("| --- " * (len(precisions) + 1) + "|")
    for mode in MODES:
        print(f"| {mode} | {' | '.join(cell(implied[p].get(mode)) for p in precisions)} |")
    print(f"\n{cpu()}")
    print("\n".join(f"`{command}`" for command in commands))
    print(f"`{' '.join(['python bench/fine_tune_speed.py', *sys.argv[1:]])}`")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="/tmp/finetune-speed")
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--epochs", default="4", help="train.py's, for last_stage and all")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--log_every_steps", type=int, default=5)
    args = parser.parse_args()
    args.precisions, args.modes = args.precisions.split(","), args.modes.split(",")
    if set(args.precisions) - set(PRECISIONS) or set(args.modes) - set(MODES):
        parser.error(f"--precisions: of {', '.join(PRECISIONS)}; --modes: of {', '.join(MODES)}")
    if float(args.epochs) <= 0 or args.num_images < 10:
        parser.error("--epochs: above 0; --num_images: at least 10")
    return args


def main():
    args = parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    if "bf16" in args.precisions and (problem := bf16_problem()):
        print(f"skipping bf16: {problem}", flush=True)
        args.precisions.remove("bf16")
    data, cache = records(args.work_dir, args.num_images), pretrained_cache(args.work_dir)
    speeds = {precision: {} for precision in args.precisions}
    commands = []
    for mode in args.modes:
        for precision in args.precisions:
            command, output = train(args, data, cache, precision, mode)
            for key, value in measure(f"{precision} {mode}", mode, output).items():
                if speeds[precision].get(key) is None:  # the head run's, where there is one
                    speeds[precision][key] = value
            commands.append(command)
    print_tables(speeds, commands)


if __name__ == "__main__":
    main()
