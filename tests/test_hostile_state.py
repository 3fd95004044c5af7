"""Hostile state and options: wrong numbers on the command line, tampered or
foreign files in models/ and in the records, two writers at once, readers
while training, read-only and full disks, and TensorFlow's start-up noise.
Each case is built for real and must end in one line naming the file and
the fix (exit code 2), never a traceback, a hang or a silently wrong metric."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import tensorflow as tf

import Evaluation
import FlowIO
import cli
import modeldir
import train
import useModel
from conftest import REPO, TRAIN_ARGS, run_script


def one_error_line(result, *expected):
    """The run failed with exit code 2 and exactly one 'error:' line, which
    contains every expected text; no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------------------
# Numbers on the command line: checked when parsed (in-process, fast)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("parse,argv,flag", [
    (train.parse_args, ["--epochs", "nan"], "--epochs"),
    (train.parse_args, ["--epochs", "inf"], "--epochs"),
    (train.parse_args, ["--warmup_epochs", "nan"], "--warmup_epochs"),
    (train.parse_args, ["--log_every_steps", "0"], "--log_every_steps"),
    (train.parse_args, ["--batch_size", "-1"], "--batch_size"),
    (train.parse_args, ["--image_size", "8"], "--image_size"),
    (train.parse_args, ["--image_size", "100000"], "--image_size"),
    (train.parse_args, ["--momentum", "1.5"], "--momentum"),
    (train.parse_args, ["--label_smoothing", "-0.1"], "--label_smoothing"),
    (train.parse_args, ["--save_every_secs", "0"], "--save_every_secs"),
    (train.parse_args, ["--seed", "-3"], "--seed"),
    (FlowIO.parse_args, ["--num_shards", "-2"], "--num_shards"),
    (FlowIO.parse_args, ["--max_side", "-5"], "--max_side"),
    (FlowIO.parse_args, ["--validation_ratio", "1"], "--validation_ratio"),
    (FlowIO.parse_args, ["--workers", "0"], "--workers"),
    (Evaluation.parse_args, ["--batch_size", "0"], "--batch_size"),
    (useModel.parse_args, ["a.jpg", "--batch_size", "-1"], "--batch_size"),
    (useModel.parse_args, ["a.jpg", "--threshold", "2"], "--threshold"),
    (useModel.parse_args, ["a.jpg", "--top_k", "0"], "--top_k"),
])
def test_every_numeric_flag_is_checked_when_parsed(parse, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], lines


def test_valid_numbers_still_parse():
    args = train.parse_args(["--epochs", "0.5", "--warmup_epochs", "0", "--seed", "0",
                             "--image_size", "64", "--momentum", "0"])
    assert (args.epochs, args.warmup_epochs, args.seed, args.image_size) == (0.5, 0, 0, 64)


def test_a_training_step_that_cannot_fit_in_memory_is_refused_before_it_starts():
    config = {"model": "layer_152", "image_size": 4096}
    with pytest.raises(cli.UserError, match="--image_size 4096 .* lower --image_size"):
        train._check_memory(config, 64)
    train._check_memory({"model": "layer_14", "image_size": 32}, 32)  # the demo fits


def test_the_reason_of_a_tensorflow_save_error_is_its_cause():
    message = ("Graph execution error:\n\nDetected at node 'save/SaveV2' defined at:\n"
               "    File \"train.py\", line 6\nNode: 'save/SaveV2'\n"
               "/m/model.ckpt-5.data-00000-of-00001.tempstate1; No space left on device\n"
               "\t [[{{node save/SaveV2}}]]")
    error = tf.errors.ResourceExhaustedError(None, None, message)
    assert cli.reason(error) == "No space left on device"
    assert cli.reason(OSError(30, "Read-only file system")) == "Read-only file system"


# ---------------------------------------------------------------------------
# Tampered model.json and labels.txt (in-process, fast)
# ---------------------------------------------------------------------------
GOOD_MANIFEST = {"model": "layer_14", "num_classes": 3, "image_size": 32, "shortcut": "A"}


@pytest.mark.parametrize("change,expected", [
    (lambda m: "{not json", "cannot be read"),
    (lambda m: dict(m, model="layer_7"), "model 'layer_7'"),
    (lambda m: dict(m, image_size=0), "image_size is 0"),
    (lambda m: {k: v for k, v in m.items() if k != "num_classes"}, "num_classes is None"),
    (lambda m: dict(m, shortcut="Z"), "shortcut 'Z'"),
    (lambda m: dict(m, flip_average="yes"), "flip_average is 'yes'"),
    (lambda m: [1, 2], "not a JSON object"),
])
def test_an_edited_manifest_is_one_line_naming_it(tmp_path, change, expected):
    FlowIO.write_labels(str(tmp_path), ["a", "b", "c"])
    changed = change(dict(GOOD_MANIFEST))
    (tmp_path / modeldir.MANIFEST_FILE).write_text(
        changed if isinstance(changed, str) else json.dumps(changed), encoding="utf-8")
    with pytest.raises(cli.UserError) as error:
        modeldir.load_manifest(str(tmp_path))
    assert expected in str(error.value) and modeldir.MANIFEST_FILE in str(error.value)


def test_a_short_labels_file_is_one_line_naming_it(tmp_path):
    (tmp_path / modeldir.MANIFEST_FILE).write_text(json.dumps(GOOD_MANIFEST), encoding="utf-8")
    FlowIO.write_labels(str(tmp_path), ["a", "b"])
    with pytest.raises(cli.UserError, match="labels.txt names 2 classes but .* says 3"):
        modeldir.load_manifest(str(tmp_path))
    (tmp_path / FlowIO.LABELS_FILE).unlink()
    with pytest.raises(cli.UserError, match="labels.txt not found"):
        modeldir.load_manifest(str(tmp_path))


# ---------------------------------------------------------------------------
# The scripts on tampered state, two writers, disks, start-up noise
# ---------------------------------------------------------------------------
@pytest.fixture()
def model_copy(trained_model, tmp_path):
    """A copy of the trained model folder, free to damage."""
    copy = str(tmp_path / "models")
    shutil.copytree(trained_model, copy)
    return copy


def write_foreign_checkpoint(model_dir, step, num_classes=5):
    """A checkpoint of the same network with another class count, as if
    dropped into model_dir by hand from another run."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        images = tf.zeros([1, 32, 32, 3])
        modeldir.build_network(images, {"model": "layer_14", "labels": list(range(num_classes))},
                               is_train=False)
        tf.compat.v1.train.get_or_create_global_step()
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"),
                                        global_step=step, write_meta_graph=False)


@pytest.mark.slow
def test_a_foreign_checkpoint_counts_as_unreadable(colour_data, model_copy):
    newest = modeldir.list_checkpoints(model_copy)[0]
    write_foreign_checkpoint(model_copy, 99999)
    foreign = os.path.join(model_copy, "model.ckpt-99999")
    # Readers of the newest checkpoint pass over it with a warning...
    result = run_script("Evaluation.py", "--model_dir", model_copy, "--data_dir",
                        colour_data[1], "--json", "--checkpoint", "latest")
    assert json.loads(result.stdout)["checkpoint"] == newest
    assert f"warning: checkpoint {foreign} is unreadable or not this model's" in result.stderr
    # ...and asking for it by name is one line.
    result = run_script("useModel.py", os.path.join(colour_data[0], "red", "000.png"),
                        "--model_dir", model_copy, "--checkpoint", foreign, check=False)
    one_error_line(result, foreign, "cannot be loaded")


@pytest.mark.slow
def test_a_record_with_a_label_outside_the_classes_is_an_error_naming_its_shard(
        colour_data, trained_model, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    shard = os.path.join(data_dir, FlowIO.load_dataset_info(data_dir)["shards"]["validation"][0])
    records = list(tf.compat.v1.io.tf_record_iterator(shard))
    example = tf.train.Example.FromString(records[3])
    example.features.feature["image/class/label"].int64_list.value[0] = 7  # 3 classes
    records[3] = example.SerializeToString()
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--data_dir", data_dir,
                        "--output_dir", str(tmp_path / "eval"), check=False)
    one_error_line(result, shard, "labelled [7]", "re-run FlowIO.py")
    result = run_script("train.py", "--data_dir", data_dir, "--model_dir",
                        str(tmp_path / "m"), *TRAIN_ARGS, "--epochs", "1", check=False)
    one_error_line(result, shard, "labelled [7]")


@pytest.mark.slow
def test_validation_counts_that_disagree_with_dataset_json_stop_training(colour_data, tmp_path):
    data_dir = str(tmp_path / "records")
    shutil.copytree(colour_data[1], data_dir)
    path = os.path.join(data_dir, FlowIO.DATASET_FILE)
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
        # which train.py replaces as it improves).
        for choice in (("--checkpoint", "latest"), ()):
            result = run_script("useModel.py", image, "--model_dir", model_dir, "--json",
                                *choice)
            assert json.loads(result.stdout)["results"][0]["label"] in ("red", "green", "blue")
            result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                                colour_data[1], "--output_dir", str(tmp_path / "eval"), "--json",
                                *choice)
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
    model_dir = os.path.join(path, "models")  # a layer_14 checkpoint does not fit in 1 MB
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
    shutil.copytree(trained_model, model_dir)
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


@pytest.mark.slow
def test_tensorflow_start_up_noise_only_with_verbose(trained_model, colour_data):
    image = os.path.join(colour_data[0], "red", "000.png")
    quiet = run_script("useModel.py", image, "--model_dir", trained_model)
    # Only our own lines: the checkpoint it chose and the precision (on
    # stderr, so stdout stays one line per image).
    assert [line.split(":")[0].split()[0] for line in quiet.stderr.splitlines()] == [
        "using", "precision"], quiet.stderr
    verbose = run_script("useModel.py", image, "--model_dir", trained_model, "--verbose")
    assert verbose.stdout == quiet.stdout
    assert len(verbose.stderr) > 0  # TensorFlow's own start-up lines
