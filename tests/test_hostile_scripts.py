"""Hostile input files and output folders, with the scripts run as a user runs
them: useModel.py on pipes, devices, oversized, thin, broken and non-UTF-8
files; Evaluation.py on such a tree; FlowIO.py into a locked, foreign,
read-only or full folder. Each asserts the one-line message, the exit code,
what was skipped, that nothing else was touched, and the memory bound where
there is one. Subprocesses have timeouts: a regression that hangs fails."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
from PIL import Image

import FlowIO
import imagefile
import useModel
from conftest import REPO, run_script
from test_hostile_inputs import (NOT_UTF8, cut_jpeg, encoded, make_tree, noise, png,
                                 strict_json)

pytestmark = pytest.mark.slow  # the scripts run as subprocesses


def error_lines(stderr):
    """The lines a user reads as errors, without TensorFlow's own log lines."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_measured(script, *args, timeout=180, **popen):
    """python SCRIPT ARGS like conftest.run_script, but also measures the
    peak memory of that process alone (its VmHWM, in MB): the returncode,
    stdout, stderr and peak. Killed after timeout seconds.

    Not os.wait4's ru_maxrss: Linux carries into it the resident size of the
    forked copy of this (large, long-lived) test process. VmHWM belongs to
    the program the child runs; it only grows, so it is read until the child
    exits, and the last reading is its peak but for the final milliseconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen([sys.executable, os.path.join(REPO, script), *map(str, args)],
                                   cwd=REPO, stdout=out, stderr=err, **popen)
        peak_kb = 0
        try:
            while process.poll() is None:
                try:
                    with open(f"/proc/{process.pid}/status") as status:
                        peak_kb = max(peak_kb, next(int(line.split()[1]) for line in status
                                                    if line.startswith("VmHWM")))
                except (OSError, StopIteration):  # exiting meanwhile
                    pass
                try:
                    process.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
                timeout -= 0.05
                if timeout < 0:
                    process.kill()
        finally:
            process.wait()
        out.seek(0)
        err.seek(0)
        return (process.returncode, out.read().decode("utf-8"), err.read().decode("utf-8"),
                peak_kb / 1024)


def hostile_folder(folder, colour_data):
    """A folder of what a user may hand useModel.py: {name: what must happen}."""
    os.makedirs(folder)
    image_dir, _ = colour_data
    shutil.copy(os.path.join(image_dir, "red", "001.png"), os.path.join(folder, "good.png"))
    shutil.copy(os.path.join(image_dir, "blue", "002.png"),
                os.path.join(folder, NOT_UTF8 + ".png"))
    os.mkfifo(os.path.join(folder, "pipe.jpg"))
    os.symlink("/dev/zero", os.path.join(folder, "zero.jpg"))
    for name, data in {"wide.png": png(70_000, 1), "thin.png": png(60_000, 1),
                       "big.png": png(12_000, 12_000),
                       "cut.jpg": cut_jpeg(encoded(noise(200, 200), quality=95))}.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return {"good.png": "red", "caf\\xe9.png": "blue",
            "pipe.jpg": "not a regular file (a named pipe)",
            "zero.jpg": "not a regular file (a character device)",
            "wide.png": "a side over 65,500", "thin.png": "too thin", "big.png": "too large",
            "cut.jpg": "premature end of data segment"}


def test_use_model_on_hostile_files_classifies_the_rest_in_bounded_memory(
        colour_data, trained_model, tmp_path):
    folder = str(tmp_path / "inputs")
    expected = hostile_folder(folder, colour_data)
    # The folder, the pipe once more by name, and a device by name.
    code, stdout, stderr, peak_mb = run_measured(
        "useModel.py", folder, os.path.join(folder, "pipe.jpg"), "/dev/zero",
        "--model_dir", trained_model, "--json", timeout=180)
    assert code == 0, stderr[-2000:]
    document = json.loads(stdout)
    json.dumps(document, ensure_ascii=False).encode("utf-8")  # no lone surrogate anywhere
    results = {os.path.basename(r["path"]): r for r in document["results"]}
    assert results["good.png"]["label"] == "red"
    assert results["caf\\xe9.png"]["label"] == "blue"
    for name, why in expected.items():
        if name not in ("good.png", "caf\\xe9.png"):
            assert why in results[name]["error"], (name, results[name])
    assert [r["path"] for r in document["results"]].count(os.path.join(folder, "pipe.jpg")) == 2
    assert results["zero"]["error"].startswith("not a regular file (a character device)")
    # A normal run peaks at about 0.67 GB here; the 60,000 x 1 image alone
    # took it to 1.75 GB, and the 12,000 x 12,000 one would add over 0.4 GB.
    assert peak_mb < 1100, peak_mb


def test_use_model_prints_names_that_are_not_utf8(colour_data, trained_model, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(os.path.join(colour_data[0], "red", "003.png"), folder / (NOT_UTF8 + ".png"))
    os.mkfifo(folder / (NOT_UTF8 + ".jpg"))
    result = run_script("useModel.py", folder, "--model_dir", trained_model, timeout=120)
    assert f"{folder}/caf\\xe9.png: red" in result.stdout
    assert f"{folder}/caf\\xe9.jpg: error: not a regular file (a named pipe)" in result.stderr


@pytest.mark.parametrize("script,args", [
    ("useModel.py", ("red", "green", "blue")),   # folders of the colour data
    ("Evaluation.py", ("--output_dir", "{tmp}/eval")),
])
def test_a_reader_that_goes_away_stops_the_script_quietly(colour_data, trained_model,
                                                          tmp_path, script, args):
    """`python useModel.py ... | head`: the pipe's reader is gone before the
    first line; exit code 1 and no traceback (cli.run_main)."""
    image_dir, data_dir = colour_data
    args = [arg.format(tmp=tmp_path) for arg in args]
    if script == "useModel.py":
        args = [os.path.join(image_dir, arg) for arg in args]
    else:
        args += ["--data_dir", data_dir]
    process = subprocess.Popen([sys.executable, os.path.join(REPO, script), *args,
                                "--model_dir", trained_model], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # no reader left: every write to stdout fails
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]


def test_classifier_keeps_the_batch_when_tensorflow_refuses_one_image(trained_model):
    # Pillow and TensorFlow's decoders can disagree on a rare file; the batch
    # around it is still classified.
    classifier = useModel.Classifier(trained_model)
    try:
        batch = [{"path": "good"}, {"path": "refused"}]
        good = encoded(Image.new("RGB", (32, 32), (200, 40, 40)))
        rows = classifier._rows(batch, [good, b"\xff\xd8\xff not a JPEG after all"])
    finally:
        classifier.close()
    assert rows[0].shape == (3,) and rows[1] is None
    assert "TensorFlow cannot decode it" in batch[1]["error"] and "error" not in batch[0]


def test_evaluation_of_a_hostile_tree_writes_valid_reports(colour_data, trained_model, tmp_path):
    image_dir = tmp_path / "images"
    shutil.copytree(colour_data[0], image_dir)
    # A blue image filed under red with a name that is not UTF-8: misclassified,
    # so its name goes into misclassified.csv and metrics.json.
    with Image.open(image_dir / "blue" / "005.png") as blue:  # a new image, not a copy
        blue.putpixel((0, 0), (0, 0, 0))
        blue.save(image_dir / "red" / (NOT_UTF8 + ".png"))
    os.mkfifo(image_dir / "green" / "pipe.png")
    (image_dir / "green" / "thin.png").write_bytes(png(60_000, 1))
    output_dir = tmp_path / "eval"
    result = run_script("Evaluation.py", "--json", "--model_dir", trained_model, "--image_dir",
                        image_dir, "--output_dir", output_dir, timeout=180)
    metrics = strict_json(output_dir / "metrics.json")
    assert json.loads(result.stdout)["num_examples"] == metrics["num_examples"] == 121
    misclassified = [row["file"] for row in metrics["misclassified"]]
    assert str(image_dir / "red" / "caf\\xe9.png") in misclassified
    assert "caf\\xe9.png" in (output_dir / "misclassified.csv").read_text(encoding="utf-8")
    skipped = {entry["path"]: entry["reason"] for entry in metrics["skipped"]}
    assert skipped == {str(image_dir / "green" / "pipe.png"):
                       "not a regular file (a named pipe): not read",
                       str(image_dir / "green" / "thin.png"): imagefile.size_problem(60_000, 1)}


# ---------------------------------------------------------------------------
# FlowIO.py's output folder
# ---------------------------------------------------------------------------
def flowio(image_dir, output_dir, *args, **popen):
    result = run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", output_dir,
                        *args, check=False, timeout=120, **popen)
    return result


def assert_one_line(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line


def snapshot(folder):
    """{relative path: bytes} of every file under folder but the lock file
    (which holds the pid of the last run that took it)."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == FlowIO.LOCK_FILE:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def test_a_second_flowio_run_is_refused_in_one_line(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    FlowIO.convert(image_dir, out, workers=1)
    os.makedirs(os.path.join(out, ".flowio-tmp-running"))
    before = snapshot(out)
    with FlowIO._lock_output_dir(out):  # as the running FlowIO.py holds it
        result = flowio(image_dir, out)
        assert_one_line(result, "another FlowIO.py run", f"process {os.getpid()}", out)
    assert snapshot(out) == before  # and its temporary folder was left alone
    assert os.path.isdir(os.path.join(out, ".flowio-tmp-running"))


def test_the_lock_ends_with_the_process_that_held_it(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    os.makedirs(out)
    # A process that takes the lock as FlowIO does, then is killed.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({os.path.join(out, FlowIO.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(Exception, match="another FlowIO.py run"):
            FlowIO.convert(image_dir, out, workers=1)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    FlowIO.convert(image_dir, out, workers=1)  # no stale lock to clear by hand


@pytest.mark.parametrize("case", ["foreign", "class_names"])
def test_flowio_refuses_before_writing_anything(tmp_path, case):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    if case == "foreign":
        os.makedirs(out)
        for name in ("train-imagenet-00000-of-01024.tfrecord", "validation-coco.tfrecord",
                     "labels.txt"):
            (tmp_path / "out" / name).write_bytes(b"the user's")
        before = snapshot(out)
        assert_one_line(flowio(image_dir, out), out, "not FlowIO.py's output", "--overwrite")
        assert snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)
    else:
        for bad in ("two\nlines", NOT_UTF8):
            os.makedirs(os.path.join(image_dir, bad))
            noise(seed=7).save(os.path.join(image_dir, bad, "a.png"))
        assert_one_line(flowio(image_dir, out), "labels.txt cannot hold",
                        "'two\\nlines' contains a line break", "'caf\\xe9' is not valid UTF-8")
        assert not os.path.exists(out)


def limit_file_size(limit):
    """preexec_fn: files this process writes stop at `limit` bytes (EFBIG),
    as on a full disk; SIGXFSZ ignored so the write fails instead of killing."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def assert_previous_output_intact(out, before):
    assert snapshot(out) == before
    assert not [name for name in os.listdir(out) if name.startswith(".flowio-tmp-")]


@pytest.mark.parametrize("fails_at", ["staging", "shard"])
def test_a_full_disk_is_one_line_and_the_previous_output_stays(tmp_path, fails_at):
    image_dir, out = make_tree(str(tmp_path / "images"), per_class=20), str(tmp_path / "out")
    FlowIO.convert(image_dir, out, validation_ratio=0, num_shards=1, workers=1)
    before = snapshot(out)
    [shard] = FlowIO.load_dataset_info(out)["shards"]["train"]
    # Staging holds the images alone; the shard adds ~100 bytes a record.
    limit = 2000 if fails_at == "staging" else len(before[shard]) - 1500
    result = flowio(image_dir, out, "--validation_ratio", "0", "--num_shards", "1",
                    "--workers", "1", "--seed", "5", preexec_fn=limit_file_size(limit))
    assert_one_line(result, f"cannot write to --output_dir {out}", "File too large")
    assert_previous_output_intact(out, before)


def test_a_read_only_output_dir_is_one_line(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path} {tmp_path}"],
            capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here to mount a folder read-only")
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    FlowIO.convert(image_dir, out, workers=1)
    before = snapshot(out)
    # FlowIO.py in a mount namespace where `out` is a read-only bind mount.
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && shift && exec "$@"',
         out, "ignored", sys.executable, os.path.join(REPO, "FlowIO.py"),
         "--image_dir", image_dir, "--output_dir", out, "--seed", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line(result, f"cannot write to --output_dir {out}", "Read-only file system")
    assert_previous_output_intact(out, before)
