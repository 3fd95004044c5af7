"""train.py as a user runs it: short real runs, resuming, signals, kills,
the model directory it writes, and the one-line refusals."""
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import train
from helpers import REPO, TRAIN_ARGS, make_colour_images, one_error_line, run_script
from suite.data import contract
from suite.hardware import precision as hardware_precision
from suite.insight.curves import load_rows
from suite.model import bookkeeping, checkpoints
from suite.model.manifest import load_manifest
from suite.preprocessing import normalization
from suite.training.compute import forward_flops
from suite.training.validation import better_weights


def evaluate_json(*args):
    return json.loads(run_script("Evaluation.py", "--json", *args).stdout)


def steps_saved(model_dir):
    return sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                  for p in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")))


@pytest.mark.slow
def test_a_short_default_run_on_real_images_beats_chance_by_far(tmp_path):
    """The embedded Fashion-MNIST demo (1,000 real 28x28 images, 10 classes)
    with every default but a shorter run: the 200 held-out images score far
    above chance (0.10). A network or augmentation that cannot learn small
    images (the 7x7 map the ImageNet stem leaves) fails here."""
    records, models = str(tmp_path / "records"), str(tmp_path / "models")
    run_script("FlowIO.py", "--output_dir", records)
    run_script("train.py", "--data_dir", records, "--model_dir", models, "--epochs", "8",
               "--seed", "0")
    # 28-px images: the small stem and the cheaper network (DEFAULT_MODELS)
    assert load_manifest(models)["model"] == "layer_14_half"
    result = evaluate_json("--model_dir", models, "--data_dir", records)
    assert result["num_examples"] == 200 and result["top1"] >= 0.6


@pytest.mark.slow
def test_model_dir_describes_itself(colour_data, trained_model):
    manifest = load_manifest(trained_model)
    info = contract.load_dataset_info(colour_data[1])
    assert manifest["labels"] == info["classes"]
    assert (manifest["model"], manifest["shortcut"], manifest["image_size"]) == \
        ("layer_14_half", "A", 32)
    # 32-px images: the small stem, the light crops and the mirror average (train.py's
    # defaults for them)
    assert manifest["stem"] == "small" and manifest["augmentation"]["preset"] == "light"
    assert manifest["flip_average"] is True
    assert manifest["data"]["fingerprint"] == info["fingerprint"]
    assert manifest["preprocessing"]["mean_rgb"] == list(normalization.MEAN_RGB)
    assert manifest["tensorflow"] == tf.__version__
    # auto's choice
    assert manifest["precision"]["name"] == hardware_precision.choose_precision().name
    with open(os.path.join(trained_model, "checkpoint"), encoding="utf-8") as f:
        assert os.sep + "model.ckpt" not in f.read()      # relative paths: the folder can move
    tags = {value.tag for path in glob.glob(os.path.join(trained_model, "events.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert {"loss", "accuracy", "learning_rate", "images_per_second", "validation_top1"} <= tags
    # The training compute: every step's batch of 16, three forward passes each
    compute = manifest["compute"]
    steps = max(steps_saved(trained_model))
    forward = forward_flops("layer_14_half", 32, len(info["classes"]), "A", "small")
    assert compute["images"] == steps * 16
    assert compute["pflop"] == pytest.approx(3 * forward * steps * 16 / 1e15, rel=1e-3)
    assert compute["minutes"] > 0 and compute["images_per_second"] > 0


@pytest.mark.slow
def test_resume_continues_from_the_newest_checkpoint(colour_data, trained_model, tmp_path):
    model_dir = str(tmp_path / "models")
    shutil.copytree(trained_model, model_dir)
    last = max(steps_saved(model_dir))
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "10")
    assert f"(step {last})" in result.stdout
    assert max(steps_saved(model_dir)) == last * 10 // 8
    assert [row["epoch"] for row in load_rows(model_dir)] == list(range(1, 11))  # curves.json
    # The compute counts on from the first run's: its images and minutes, and more
    before, after = load_manifest(trained_model)["compute"], load_manifest(model_dir)["compute"]
    assert after["images"] == before["images"] * 10 // 8 and after["minutes"] > before["minutes"]
    assert "PFLOP of training compute" in result.stdout


@pytest.mark.slow
def test_garbled_state_file_and_unreadable_newest_checkpoint_fall_back(colour_data,
                                                                      trained_model, tmp_path):
    model_dir = str(tmp_path / "models")
    shutil.copytree(trained_model, model_dir)
    newest, previous = steps_saved(model_dir)[-1], steps_saved(model_dir)[-2]
    with open(os.path.join(model_dir, "checkpoint"), "w") as f:
        f.write("garbage {{{")
    data_file = glob.glob(os.path.join(model_dir, f"model.ckpt-{newest}.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(100)
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "9")
    assert f"model.ckpt-{newest} is unreadable" in result.stderr
    assert f"(step {previous})" in result.stdout
    # The curves had reached the unreadable checkpoint's epoch: resumed from
    # the one before, that epoch is trained again and drawn once.
    rows = load_rows(model_dir)
    assert [row["epoch"] for row in rows] == list(range(1, 10))
    assert [row["step"] for row in rows] == [previous // 7 * epoch for epoch in range(1, 10)]


def _start_training(data_dir, model_dir, *extra):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", data_dir,
         "--model_dir", model_dir, *TRAIN_ARGS, "--epochs", "500", "--log_every_steps", "1",
         *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(process, step):
    """Reads the process's output until it prints step `step`; returns it."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(f"step {step}/"):
            return "".join(seen)
    raise AssertionError(f"training ended before step {step}: {process.stderr.read()[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_save_a_checkpoint_and_exit_cleanly(colour_data, tmp_path, stop):
    model_dir = str(tmp_path / "models")
    process = _start_training(colour_data[1], model_dir, "--save_every_steps", "1000",
                              "--class_weights", "balanced")
    _wait_for_step(process, 3)
    process.send_signal(stop)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert f"stopped by {stop.name}" in out
    stopped_at = max(steps_saved(model_dir))
    assert stopped_at >= 3
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "2")
    assert f"(step {stopped_at})" in result.stdout


@pytest.mark.slow
def test_sigkill_during_saves_loses_at_most_one_save_interval(colour_data, tmp_path):
    # Saving every step, and killing as soon as a step is printed (the save
    # follows the print), lands the kill inside a save.
    model_dir = str(tmp_path / "models")
    resumed = 0
    for kill_at in (5, 9):
        process = _start_training(colour_data[1], model_dir, "--save_every_steps", "1")
        out = _wait_for_step(process, kill_at)
        process.kill()
        process.communicate()
        if resumed:  # the newest, or the one before if the kill cut the newest short
            assert f"(step {resumed})" in out or f"(step {resumed - 1})" in out
        resumed = max(steps_saved(model_dir))
        assert resumed >= kill_at - 1
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "2", "--save_every_steps", "1")
    # The newest checkpoint may be the one the kill cut short: then the one before.
    assert f"(step {resumed})" in result.stdout or f"(step {resumed - 1})" in result.stdout


@pytest.mark.slow
def test_changed_class_list_stops_with_the_two_choices(trained_model, tmp_path):
    image_dir = make_colour_images(str(tmp_path / "images"), per_class=6)
    os.makedirs(os.path.join(image_dir, "zebra"))
    for name in ("000.png", "001.png", "002.png"):
        Image.open(os.path.join(image_dir, "red", name)).convert("L").save(
            os.path.join(image_dir, "zebra", name))
    data_dir = str(tmp_path / "records")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", data_dir)
    model_dir = str(tmp_path / "models")
    shutil.copytree(trained_model, model_dir)
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir,
                        *TRAIN_ARGS, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "new --model_dir" in result.stderr and "--init_checkpoint" in result.stderr
    # The second choice works: fine-tune into a new folder, logits re-initialised;
    # with --trainable_scopes only the logits change.
    finetuned = str(tmp_path / "finetuned")
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir", finetuned,
                        *TRAIN_ARGS, "--epochs", "1", "--init_checkpoint", trained_model,
                        "--trainable_scopes", "resnet/logits")
    assert "initialised" in result.stdout and "finished" in result.stdout
    before = tf.train.load_checkpoint(checkpoints.list_checkpoints(trained_model)[0])
    after = tf.train.load_checkpoint(checkpoints.list_checkpoints(finetuned)[0])
    for name in ("resnet/conv1/weights", "resnet/block4/unit_1/bottleneck_v1/conv3/weights"):
        np.testing.assert_array_equal(before.get_tensor(name), after.get_tensor(name))
    assert after.get_tensor("resnet/logits/weights").shape[-1] == 4


@pytest.mark.slow
def test_diverging_loss_stops_with_the_step_number(colour_data, tmp_path):
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                        str(tmp_path / "models"), *TRAIN_ARGS, "--learning_rate", "1e30",
                        "--warmup_epochs", "0", "--epochs", "3", check=False)
    assert result.returncode == 1
    assert "at step" in result.stderr and "--learning_rate" in result.stderr


@pytest.mark.slow
def test_damaged_shard_is_named(colour_data, trained_model, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    shard = os.path.join(data_dir, contract.load_dataset_info(data_dir)["shards"]["validation"][0])
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--data_dir", data_dir,
                        check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert shard in result.stderr


@pytest.mark.slow
def test_batch_and_erasing_augmentations_train_and_are_recorded(colour_data, tmp_path):
    """mixup, CutMix and random erasing go through the real pipeline and
    training, and model.json and the training line say which were on."""
    _, data_dir = colour_data
    models = str(tmp_path / "models")
    trained = run_script("train.py", "--data_dir", data_dir, "--model_dir", models, *TRAIN_ARGS,
                         "--epochs", "0.5", "--mixup", "0.2", "--cutmix", "1.0",
                         "--random_erasing", "0.5")
    assert load_manifest(models)["augmentation"] == {
        "preset": "light", "mixup": 0.2, "cutmix": 1.0, "random_erasing": 0.5}
    assert "light augmentation + mixup 0.2 + cutmix 1 + random erasing 0.5" in trained.stdout
    assert steps_saved(models)
    refused = run_script("train.py", "--data_dir", data_dir, "--model_dir", str(tmp_path / "m2"),
                         "--random_erasing", "1.5", check=False)
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr


def test_mixed_precision_is_fp16_and_conflicts_are_refused(capsys):
    assert train.parse_args(["--mixed_precision"]).precision == "fp16"
    assert train.parse_args([]).precision == "auto"
    with pytest.raises(SystemExit):
        train.parse_args(["--mixed_precision", "--precision", "bf16"])
    assert "--mixed_precision means --precision fp16" in capsys.readouterr().err


@pytest.mark.slow
def test_training_with_averages_and_early_stopping_then_evaluation_uses_best(colour_data,
                                                                             tmp_path):
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    command = ("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "30", "--moving_average_decay", "0.9", "--early_stop_patience", "1")
    result = run_script(*command)
    # Both weights are validated each time; with patience 1 (the colour data
    # is learnt within a few epochs) the run stops at the first validation
    # that does not beat the best, long before 30 epochs.
    validations = [line for line in result.stdout.splitlines()
                   if line.startswith("validation top-1")]
    assert validations and all(" raw, " in line and " moving average" in line
                               for line in validations)
    assert "stopped early at step" in result.stdout, result.stdout
    newest = checkpoints.list_checkpoints(model_dir)[0]
    stored = tf.train.load_checkpoint(newest).get_variable_to_shape_map()
    assert checkpoints.average_name("resnet/conv1/weights") in stored
    best = bookkeeping.load_best(model_dir)
    assert best["weights"] in (bookkeeping.RAW, bookkeeping.MOVING_AVERAGE)
    best_path = checkpoints.resolve_checkpoint(model_dir, "best")
    assert checkpoints.checkpoint_step(best_path) == best["step"]
    assert not [name for name in tf.train.load_checkpoint(best_path).get_variable_to_shape_map()
                if checkpoints.is_average(name)]
    record = bookkeeping.load_validation(model_dir)
    assert record["weights"] == better_weights(
        {bookkeeping.RAW: record["top1"],
         bookkeeping.MOVING_AVERAGE: record["moving_average_top1"]})
    assert record["stopped_early"]["step"] == checkpoints.checkpoint_step(newest)
    assert f"(step {best['step']}, in {os.path.join(model_dir, 'best')})" in result.stdout

    # The same command again does not train on: it says why and how to go on.
    again = run_script(*command)
    assert f"stopped early at step {checkpoints.checkpoint_step(newest)}" in again.stdout
    assert "--early_stop_patience above 1 or --epochs above 30" in again.stdout
    assert checkpoints.list_checkpoints(model_dir)[0] == newest

    # Evaluation.py takes best/ by default and says so first; --checkpoint
    # latest takes the newest, read as the weights the latest validation preferred.
    result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir", data_dir)
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"using {best_path} (best validation top-1 "
                            f"{best['validation_top1']:.4f} at step {best['step']}")
    assert first.endswith("; --checkpoint latest for the newest)")
    assert f"checkpoint {best_path}:" in result.stdout and "macro-recall" in result.stdout
    latest = json.loads(run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                                   data_dir, "--checkpoint", "latest", "--json").stdout)
    assert latest["checkpoint"] == newest and latest["weights"] == record["weights"]
    # The newest checkpoint is the one just validated (train.py validated in
    # its own precision, bf16 on some CPUs: one image of 24 may differ).
    validated = record["top1" if record["weights"] == bookkeeping.RAW else "moving_average_top1"]
    assert latest["top1"] == pytest.approx(validated, abs=0.05)


def _losses(stdout):
    return [line.split(" loss ")[1].split()[0] for line in stdout.splitlines()
            if line.startswith("step ")]


@pytest.mark.slow
def test_mixed_precision_and_xla_run_and_learn_on_the_cpu(colour_data, tmp_path):
    # float16 has no fast kernels on some CPUs (layer_14 at 32 px trained 1.3
    # images/s on a Xeon with AMX, against 165 in fp32): layer_14_half at 16
    # px for 2 epochs, a third of layer_14's time there.
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                        str(tmp_path / "models"), "--model", "layer_14_half", "--image_size", "16",
                        "--batch_size", "16", "--seed", "1", "--epochs", "2",
                        "--mixed_precision", "--xla", "--log_every_steps", "1")
    # --mixed_precision is --precision fp16: said on the second line (after the
    # start's), kept in model.json.
    assert result.stdout.splitlines()[1].startswith("precision fp16: as requested")
    assert load_manifest(str(tmp_path / "models"))["precision"]["name"] == "fp16"
    losses = [float(x) for x in _losses(result.stdout)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    top1 = [float(l.split(": ")[1].split()[0]) for l in result.stdout.splitlines()
            if l.startswith("validation top-1")]
    assert top1[-1] > 0.6


@pytest.mark.slow
def test_deterministic_runs_repeat_the_loss_curve(colour_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                            str(tmp_path / name), *TRAIN_ARGS, "--epochs", "2",
                            "--deterministic", "--log_every_steps", "1")
        runs.append(_losses(result.stdout))
        # The second line, after the start's: what --precision auto chose
        # on this machine, and why.
        assert result.stdout.splitlines()[1] == str(hardware_precision.choose_precision())
    assert len(runs[0]) >= 10 and runs[0] == runs[1]


@pytest.mark.slow
def test_validation_counts_that_disagree_with_dataset_json_stop_training(colour_data, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    path = os.path.join(data_dir, contract.DATASET_FILE)
    info = json.load(open(path, encoding="utf-8"))
    info["num_examples"]["validation"] += 5
    json.dump(info, open(path, "w", encoding="utf-8"))
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir", str(tmp_path / "m"),
                        *TRAIN_ARGS, "--epochs", "1", check=False)
    one_error_line(result, data_dir, "validation records", "re-run FlowIO.py")


def start_training(data_dir, model_dir, *args):
    """train.py in the background, once it has printed its first step."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", data_dir,
         "--model_dir", model_dir, *TRAIN_ARGS, "--epochs", "200", "--log_every_steps", "1",
         *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("step "):
            # Keep reading its output, so a full pipe never blocks it.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process
    raise AssertionError(f"train.py ended before its first step (exit {process.wait()})")


@contextlib.contextmanager
def stopped_at_exit(process):
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=60)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_readers_work_while_training(colour_data, tmp_path):
    model_dir = str(tmp_path / "models")
    # A checkpoint every step and only the newest kept: the one a reader
    # chooses is deleted within a step.
    with stopped_at_exit(start_training(colour_data[1], model_dir, "--save_every_steps", "1",
                                        "--keep_checkpoints", "1")):
        result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                            model_dir, *TRAIN_ARGS, check=False)
        one_error_line(result, model_dir, "is being trained by train.py (pid",
                       "another --model_dir")
        image = os.path.join(colour_data[0], "red", "000.png")
        # The newest, and the default (best/'s once a validation saved one,
        # which train.py replaces as it improves): one reader each.
        result = run_script("useModel.py", image, "--model_dir", model_dir, "--json",
                            "--checkpoint", "latest")
        assert json.loads(result.stdout)["results"][0]["label"] in ("red", "green", "blue")
        result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                            colour_data[1], "--output_dir", str(tmp_path / "eval"), "--json")
        assert json.loads(result.stdout)["num_examples"] > 0
    # The lock died with its process: training into the folder works again.
    run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
               *TRAIN_ARGS, "--epochs", "0.1", "--eval_every_epochs", "0")


@pytest.fixture()
def disk(tmp_path):
    """Mounts a tmpfs of a given size in tmp_path (root only); returns
    (path, remount_read_only). Unmounted after the test."""
    mounted = []

    def mount(size):
        mount_point = tmp_path / f"disk{len(mounted)}"
        mount_point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(mount_point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(str(mount_point))
        return str(mount_point), lambda: subprocess.run(
            ["mount", "-o", "remount,ro", str(mount_point)], check=True)
    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", mount_point])


@pytest.mark.slow
def test_a_full_disk_during_a_save_names_the_reason_and_leaves_nothing_behind(
        colour_data, disk):
    path, _ = disk("1m")
    model_dir = os.path.join(path, "models")  # no checkpoint of TRAIN_ARGS fits in 1 MB
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "0.2", check=False)
    # The checkpoint or the TensorBoard events, whichever fills the disk first.
    one_error_line(result, model_dir, "No space left on device", "free some space")
    assert not [name for name in os.listdir(model_dir) if "tempstate" in name]


@pytest.mark.slow
def test_read_only_folders_are_one_line_and_evaluation_prints_its_metrics_first(
        colour_data, trained_model, disk):
    path, read_only = disk("256m")
    model_dir = os.path.join(path, "models")
    shutil.copytree(trained_model, model_dir, symlinks=True)  # best is a link: copy it as one
    read_only()
    result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                        colour_data[1], check=False)
    assert "top-1" in result.stdout  # the metrics were printed before the write failed
    one_error_line(result, "metrics are printed above", "Read-only file system")
    result = run_script("useModel.py", "--export", os.path.join(path, "export"),
                        "--model_dir", model_dir, check=False)
    one_error_line(result, "--export", "Read-only file system")
    # Resuming training into a read-only models/.
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "20", check=False)
    one_error_line(result, f"--model_dir {model_dir}", "Read-only file system")
