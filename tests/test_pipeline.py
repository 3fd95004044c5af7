"""The four scripts end to end, run as subprocesses the way a user runs them."""
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import FlowIO
import hardware
import modeldir
from conftest import REPO, TRAIN_ARGS, make_colour_images, run_script

pytestmark = pytest.mark.slow  # the scripts run as subprocesses


def evaluate_json(*args):
    return json.loads(run_script("Evaluation.py", "--json", *args).stdout)


def steps_saved(model_dir):
    return sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                  for p in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")))


def test_a_short_default_run_on_real_images_beats_chance_by_far(tmp_path):
    """The embedded Fashion-MNIST demo (1,000 real 28x28 images, 10 classes)
    with every default but a shorter run: the 200 held-out images score far
    above chance (0.10). A network or augmentation that cannot learn small
    images (the 7x7 map the ImageNet stem leaves) fails here."""
    records, models = str(tmp_path / "records"), str(tmp_path / "models")
    run_script("FlowIO.py", "--output_dir", records)
    run_script("train.py", "--data_dir", records, "--model_dir", models, "--epochs", "8",
               "--seed", "0")
    # 28-px images: the small stem and the cheaper network (train.DEFAULT_MODELS)
    assert modeldir.load_manifest(models)["model"] == "layer_14_half"
    result = evaluate_json("--model_dir", models, "--data_dir", records)
    assert result["num_examples"] == 200 and result["top1"] >= 0.6


def test_evaluation_reports_consistent_metrics_well_above_chance(colour_data, trained_model):
    _, data_dir = colour_data
    result = evaluate_json("--model_dir", trained_model, "--data_dir", data_dir)
    assert result["top1"] > 0.8                       # 3 classes: chance is 1/3
    assert result["num_examples"] == FlowIO.load_dataset_info(data_dir)["num_examples"]["validation"]
    # By default the checkpoint that validated best (best/), not the newest.
    best = modeldir.load_best(trained_model)
    assert result["checkpoint"] == os.path.join(trained_model, "best",
                                                f"model.ckpt-{best['step']}")
    assert "top5" not in result                       # fewer than 5 classes
    assert sum(row["support"] for row in result["per_class"]) == result["num_examples"]
    assert result["macro_recall"] == pytest.approx(np.mean([row["recall"]
                                                            for row in result["per_class"]]))
    confusion = np.array(result["confusion_matrix"])
    assert np.trace(confusion) / confusion.sum() == result["top1"]
    with open(result["files"]["misclassified_csv"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["num_examples"] - np.trace(confusion)
    assert all(row["true"] != row["predicted"] for row in rows)
    with Image.open(result["files"]["confusion_matrix_png"]) as image:
        image.verify()


def test_checkpoint_all_marks_the_best(colour_data, trained_model):
    result = evaluate_json("--model_dir", trained_model, "--data_dir", colour_data[1],
                           "--checkpoint", "all")
    assert len(result["checkpoints"]) >= 2
    best = [row for row in result["checkpoints"] if row["best"]]
    assert len(best) == 1 and best[0]["top1"] == max(r["top1"] for r in result["checkpoints"])


def test_use_model_names_a_class_and_reports_broken_files(colour_data, trained_model, tmp_path):
    image_dir, _ = colour_data
    labels = FlowIO.read_labels(os.path.join(trained_model, "labels.txt"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(os.path.join(image_dir, "red", "000.png"), folder / "photo.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    result = run_script("useModel.py", str(folder), "--model_dir", trained_model, "--json",
                        "--top_k", "2")
    entries = {os.path.basename(r["path"]): r for r in json.loads(result.stdout)["results"]}
    assert entries["photo.png"]["label"] in labels
    assert entries["photo.png"]["label"] == "red"
    assert len(entries["photo.png"]["predictions"]) == 2
    assert "error" in entries["broken.jpg"]
    # Nothing classifiable: a non-zero exit, one error line per file, no traceback.
    failed = run_script("useModel.py", str(folder / "broken.jpg"), "--model_dir",
                        trained_model, check=False)
    assert failed.returncode == 1 and "broken.jpg: error:" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_threshold_answers_unknown(colour_data, trained_model):
    image = os.path.join(colour_data[0], "blue", "001.png")
    # Below a threshold of 1 (the largest valid one) every answer is unknown.
    result = run_script("useModel.py", image, "--model_dir", trained_model, "--json",
                        "--threshold", "1")
    entry = json.loads(result.stdout)["results"][0]
    assert entry["label"] == "unknown" and entry["predictions"][0]["label"] in FlowIO.read_labels(
        os.path.join(trained_model, "labels.txt"))


def test_model_dir_describes_itself(colour_data, trained_model):
    manifest = modeldir.load_manifest(trained_model)
    info = FlowIO.load_dataset_info(colour_data[1])
    assert manifest["labels"] == info["classes"]
    assert (manifest["model"], manifest["shortcut"], manifest["image_size"]) == ("layer_14", "A", 32)
    # 32-px images: the small stem and the light crops (train.py's defaults for them)
    assert manifest["stem"] == "small" and manifest["augmentation"]["preset"] == "light"
    assert manifest["data"]["fingerprint"] == info["fingerprint"]
    assert manifest["preprocessing"]["mean_rgb"] == list(FlowIO.MEAN_RGB)
    assert manifest["tensorflow"] == tf.__version__
    assert manifest["precision"]["name"] == hardware.choose_precision().name  # auto's choice
    with open(os.path.join(trained_model, "checkpoint"), encoding="utf-8") as f:
        assert os.sep + "model.ckpt" not in f.read()      # relative paths: the folder can move
    tags = {value.tag for path in glob.glob(os.path.join(trained_model, "events.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert {"loss", "accuracy", "learning_rate", "images_per_second", "validation_top1"} <= tags


def test_moved_model_dir_still_evaluates(colour_data, trained_model, tmp_path):
    moved = str(tmp_path / "elsewhere" / "models")
    shutil.copytree(trained_model, moved)
    result = evaluate_json("--model_dir", moved, "--data_dir", colour_data[1])
    assert result["checkpoint"].startswith(moved)
    assert result["top1"] == evaluate_json("--model_dir", trained_model,
                                           "--data_dir", colour_data[1])["top1"]


def test_resume_continues_from_the_newest_checkpoint(colour_data, trained_model, tmp_path):
    model_dir = str(tmp_path / "models")
    shutil.copytree(trained_model, model_dir)
    last = max(steps_saved(model_dir))
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--epochs", "10")
    assert f"(step {last})" in result.stdout
    assert max(steps_saved(model_dir)) == last * 10 // 8


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
    before = tf.train.load_checkpoint(modeldir.list_checkpoints(trained_model)[0])
    after = tf.train.load_checkpoint(modeldir.list_checkpoints(finetuned)[0])
    for name in ("resnet/conv1/weights", "resnet/block4/unit_1/bottleneck_v1/conv3/weights"):
        np.testing.assert_array_equal(before.get_tensor(name), after.get_tensor(name))
    assert after.get_tensor("resnet/logits/weights").shape[-1] == 4


def test_diverging_loss_stops_with_the_step_number(colour_data, tmp_path):
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                        str(tmp_path / "models"), *TRAIN_ARGS, "--learning_rate", "1e30",
                        "--warmup_epochs", "0", "--epochs", "3", check=False)
    assert result.returncode == 1
    assert "at step" in result.stderr and "--learning_rate" in result.stderr


def test_damaged_shard_is_named(colour_data, trained_model, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    shard = os.path.join(data_dir, FlowIO.load_dataset_info(data_dir)["shards"]["validation"][0])
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--data_dir", data_dir,
                        check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert shard in result.stderr


def test_batch_and_erasing_augmentations_train_and_are_recorded(colour_data, tmp_path):
    """mixup, CutMix and random erasing go through the real pipeline and
    training, and model.json and the training line say which were on."""
    _, data_dir = colour_data
    models = str(tmp_path / "models")
    trained = run_script("train.py", "--data_dir", data_dir, "--model_dir", models, *TRAIN_ARGS,
                         "--epochs", "0.5", "--mixup", "0.2", "--cutmix", "1.0",
                         "--random_erasing", "0.5")
    assert modeldir.load_manifest(models)["augmentation"] == {
        "preset": "light", "mixup": 0.2, "cutmix": 1.0, "random_erasing": 0.5}
    assert "light augmentation + mixup 0.2 + cutmix 1 + random erasing 0.5" in trained.stdout
    assert steps_saved(models)
    refused = run_script("train.py", "--data_dir", data_dir, "--model_dir", str(tmp_path / "m2"),
                         "--random_erasing", "1.5", check=False)
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr
