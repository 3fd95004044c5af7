"""useModel.py as a user runs it: classifying files and folders, hostile files
in bounded memory, names that are not UTF-8, a reader that goes away."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import NOT_UTF8, REPO, error_lines, hostile_folder, run_script
from suite.data import contract


@pytest.mark.slow
def test_use_model_names_a_class_and_reports_broken_files(colour_data, trained_model, tmp_path):
    image_dir, _ = colour_data
    labels = contract.read_labels(os.path.join(trained_model, "labels.txt"))
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


@pytest.mark.slow
def test_threshold_answers_unknown(colour_data, trained_model):
    image = os.path.join(colour_data[0], "blue", "001.png")
    # Below a threshold of 1 (the largest valid one) every answer is unknown.
    result = run_script("useModel.py", image, "--model_dir", trained_model, "--json",
                        "--threshold", "1")
    entry = json.loads(result.stdout)["results"][0]
    assert entry["label"] == "unknown" and entry["predictions"][0]["label"] in contract.read_labels(
        os.path.join(trained_model, "labels.txt"))


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




@pytest.mark.slow
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


@pytest.mark.slow
def test_use_model_prints_names_that_are_not_utf8(colour_data, trained_model, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(os.path.join(colour_data[0], "red", "003.png"), folder / (NOT_UTF8 + ".png"))
    os.mkfifo(folder / (NOT_UTF8 + ".jpg"))
    result = run_script("useModel.py", folder, "--model_dir", trained_model, timeout=120)
    assert f"{folder}/caf\\xe9.png: red" in result.stdout
    assert f"{folder}/caf\\xe9.jpg: error: not a regular file (a named pipe)" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script,args", [
    ("useModel.py", ("red", "green", "blue")),   # folders of the colour data
    ("Evaluation.py", ("--output_dir", "{tmp}/eval")),
])
def test_a_reader_that_goes_away_stops_the_script_quietly(colour_data, trained_model,
                                                          tmp_path, script, args):
    """`python useModel.py ... | head`: the pipe's reader is gone before the
    first line; exit code 1 and no traceback (errors.run_main)."""
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


@pytest.mark.slow
def test_export_without_a_model_is_a_one_line_error(tmp_path):
    result = run_script("useModel.py", "--export", tmp_path / "out", "--model_dir",
                        tmp_path / "nothing", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(error_lines(result.stderr)) == 1 and "train.py" in result.stderr
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
