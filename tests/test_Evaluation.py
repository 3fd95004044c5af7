"""Evaluation.py as a user runs it: its metrics, --checkpoint all, and image
trees evaluated as FlowIO.py converts them, hostile ones included."""
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import (CHROMIUM, NOT_UTF8, REPO, browser_screenshot, error_lines, finish, png,
                     run_script, strict_json)
from suite.data import contract
from suite.images import decoding
from suite.model import bookkeeping


def evaluate_json(*args):
    return json.loads(run_script("Evaluation.py", "--json", *args).stdout)


@pytest.mark.slow
def test_evaluation_reports_consistent_metrics_well_above_chance(colour_data, trained_model):
    _, data_dir = colour_data
    result = evaluate_json("--model_dir", trained_model, "--data_dir", data_dir)
    assert result["top1"] > 0.8                       # 3 classes: chance is 1/3
    info = contract.load_dataset_info(data_dir)
    assert result["num_examples"] == info["num_examples"]["validation"]
    # By default the checkpoint that validated best (best/), not the newest.
    best = bookkeeping.load_best(trained_model)
    assert result["checkpoint"] == os.path.join(trained_model, "best",
                                                f"model.ckpt-{best['step']}")
    assert "top5" not in result                       # fewer than 5 classes
    assert sum(row["support"] for row in result["per_class"]) == result["num_examples"]
    assert result["macro_recall"] == pytest.approx(np.mean([row["recall"]
                                                            for row in result["per_class"]]))
    cells = result["confusion_counts"]
    right = sum(cell["count"] for cell in cells if cell["true"] == cell["predicted"])
    assert sum(cell["count"] for cell in cells) == result["num_examples"]
    assert right / result["num_examples"] == result["top1"]
    with open(result["files"]["confusion_matrix_csv"], encoding="utf-8", newline="") as f:
        assert [dict(row, count=int(row["count"])) for row in csv.DictReader(f)] == cells
    with open(result["files"]["misclassified_csv"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["num_examples"] - right
    assert all(row["true"] != row["predicted"] for row in rows)
    with Image.open(result["files"]["confusion_matrix_png"]) as image:
        image.verify()
    # report.html (tests/insight/test_page.py tests what it holds), with the
    # run's curves; in a real browser where Chromium is installed.
    with open(result["files"]["report_html"], encoding="utf-8") as f:
        assert "training curves" in f.read()
    if CHROMIUM:
        colours = browser_screenshot(result["files"]["report_html"],
                                     os.path.join(trained_model, "page.png"))
        assert len(colours) > 50  # text, tables and the curves: not a blank page


@pytest.mark.slow
def test_checkpoint_all_marks_the_best(colour_data, trained_model):
    result = evaluate_json("--model_dir", trained_model, "--data_dir", colour_data[1],
                           "--checkpoint", "all")
    assert len(result["checkpoints"]) >= 2
    best = [row for row in result["checkpoints"] if row["best"]]
    assert len(best) == 1 and best[0]["top1"] == max(r["top1"] for r in result["checkpoints"])


@pytest.mark.slow
def test_moved_model_dir_still_evaluates(colour_data, trained_model, tmp_path):
    moved = str(tmp_path / "elsewhere" / "models")
    shutil.copytree(trained_model, moved)
    result = evaluate_json("--model_dir", moved, "--data_dir", colour_data[1])
    assert result["checkpoint"].startswith(moved)
    assert result["top1"] == evaluate_json("--model_dir", trained_model,
                                           "--data_dir", colour_data[1])["top1"]


@pytest.mark.slow
def test_evaluation_of_an_image_tree_equals_evaluation_of_its_records(colour_data,
                                                                     trained_model, tmp_path):
    image_dir = str(tmp_path / "images")
    shutil.copytree(colour_data[0], image_dir)
    broken = os.path.join(image_dir, "red", "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"not an image")
    records = str(tmp_path / "records")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", records,
               "--validation_ratio", "0")
    from_records = json.loads(run_script(
        "Evaluation.py", "--json", "--model_dir", trained_model, "--data_dir", records,
        "--split", "train", "--output_dir", tmp_path / "eval_records").stdout)
    result = run_script("Evaluation.py", "--json", "--model_dir", trained_model,
                        "--image_dir", image_dir, "--output_dir", tmp_path / "eval_tree")
    from_tree = json.loads(result.stdout)
    assert from_tree["num_examples"] == from_records["num_examples"] == 120
    assert from_tree["top1"] == from_records["top1"]
    assert from_tree["confusion_counts"] == from_records["confusion_counts"]
    assert sorted(row["file"] for row in from_tree["misclassified"]) == sorted(
        os.path.join(image_dir, row["file"]) for row in from_records["misclassified"])
    # The unusable file is reported as FlowIO.py reports it.
    assert from_tree["skipped"] == [{"path": broken, "reason": "not an image Pillow can read"}]
    assert f"not an image Pillow can read: {broken}" in result.stderr  # by reason, as FlowIO
    assert from_tree["image_dir"] == os.path.abspath(image_dir)


@pytest.mark.slow
def test_evaluation_of_a_mismatched_tree_is_a_one_line_error(colour_data, trained_model,
                                                            tmp_path):
    image_dir = tmp_path / "images"
    for colour in ("green", "red"):
        shutil.copytree(os.path.join(colour_data[0], colour), image_dir / colour)
    shutil.copytree(os.path.join(colour_data[0], "blue"), image_dir / "zebra")
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--image_dir",
                        image_dir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "zebra" in line and "missing: blue" in line
    # A class folder whose every file is unusable is no class either.
    shutil.rmtree(image_dir / "zebra")
    (image_dir / "blue").mkdir()
    (image_dir / "blue" / "empty.png").write_bytes(b"")
    result = run_script("Evaluation.py", "--model_dir", trained_model, "--image_dir",
                        image_dir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "blue" in line and "no usable image" in line
    assert "empty file: " in result.stdout and "empty.png" in result.stdout




@pytest.mark.slow
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
                       str(image_dir / "green" / "thin.png"): decoding.size_problem(60_000, 1)}


def converting(tmp):
    return glob.glob(os.path.join(tmp, "evaluation-records-*"))


def evaluating(tmp):  # the records are complete: the network runs on them
    return glob.glob(os.path.join(tmp, "evaluation-records-*", "dataset.json"))


@pytest.mark.slow
@pytest.mark.parametrize("sig, moment", [(signal.SIGTERM, converting),
                                         (signal.SIGINT, evaluating)],
                         ids=["SIGTERM-converting", "SIGINT-evaluating"])
def test_a_stopped_image_dir_evaluation_removes_its_records(colour_data, trained_model,
                                                            tmp_path, sig, moment):
    """SIGTERM or Ctrl-C while --image_dir's tree is converted or evaluated:
    the converted copy in the temporary folder is removed, and the run ends
    with one line and 128 + the signal's number, never a traceback."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "Evaluation.py"), "--model_dir", trained_model,
         "--image_dir", colour_data[0], "--output_dir", tmp_path / "eval", "--batch_size", "1"],
        cwd=REPO, env=dict(os.environ, TMPDIR=str(tmp)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not moment(tmp) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert moment(tmp), "the run never got there"
        process.send_signal(sig)
        code, out, err = finish(process, 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert os.listdir(tmp) == []
    assert code == 128 + sig, (code, err[-2000:])
    assert "Traceback" not in err
    assert f"stopped by {sig.name}" in err.splitlines()[-1]
    assert not (tmp_path / "eval" / "metrics.json").exists()
