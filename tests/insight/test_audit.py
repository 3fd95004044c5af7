"""suite/insight/audit.py and Evaluation.py --audit: images moved to the
wrong class folder are found, listed with the label the model suggests, and
FlowIO.py --exclude leaves them out of the next conversion, the user's files
untouched."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

import Evaluation
from helpers import TRAIN_ARGS, make_colour_images, run_script
from suite.data.convert import convert
from suite.insight.audit import audit_rows, label_scores

CLASSES = ["blue", "green", "red"]


def confident_probabilities(truth, rng, classes=3):
    """A model's probabilities, confident of each image's true class."""
    probabilities = rng.dirichlet(np.ones(classes) * 0.3, len(truth)) * 0.15
    probabilities[np.arange(len(truth)), truth] += 0.85
    return probabilities


def test_flipped_labels_rank_first_and_are_flagged():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 600)
    labels = truth.copy()
    flipped = rng.choice(600, 30, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, 3, 30)) % 3
    probabilities = confident_probabilities(truth, rng)
    files = [f"{CLASSES[label]}/{i}.png" for i, label in enumerate(labels)]
    rows = audit_rows(labels, probabilities, files, ["train"] * 600, CLASSES)

    found = {int(row["file"].split("/")[1][:-4]) for row in rows}
    # Confident learning flags an image only where the model is at least as
    # sure of the other class as it is, on average, of that class's images.
    assert len(found & set(flipped)) >= 20 and len(found - set(flipped)) <= 2
    suspicion = [row["label_probability"] for row in rows]
    assert suspicion == sorted(suspicion)  # the least likely label first
    by_file = {row["file"]: row for row in rows}
    for i in flipped:
        row = by_file.get(files[i])
        if row:
            assert row["label"] == CLASSES[labels[i]]
            assert row["suggested"] == CLASSES[truth[i]]
    assert set(np.argsort(label_scores(labels, probabilities))[:30]) == set(flipped)


def test_one_class_or_clean_labels_flag_nothing():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 300)
    probabilities = confident_probabilities(truth, rng)
    assert audit_rows(truth, probabilities, ["f"] * 300, ["train"] * 300, CLASSES) == []
    single = np.zeros(10, dtype=int)
    assert audit_rows(single, np.tile([1.0, 0, 0], (10, 1)), ["f"] * 10, ["train"] * 10,
                      CLASSES) == []


@pytest.mark.slow
def test_audit_finds_moved_images_and_exclude_leaves_them_out(tmp_path):
    image_dir = make_colour_images(str(tmp_path / "images"), per_class=40)
    moved = []
    for index, name in enumerate(CLASSES):  # 3 images of each class put in the next one's
        other = CLASSES[(index + 1) % 3]
        for i in (5, 17, 29):
            target = os.path.join(image_dir, other, f"moved-{name}-{i:03d}.png")
            shutil.move(os.path.join(image_dir, name, f"{i:03d}.png"), target)
            moved.append(target)
    data_dir, model_dir = str(tmp_path / "records"), str(tmp_path / "models")
    convert(image_dir, data_dir, workers=1)  # FlowIO.py's conversion
    # Trained briefly: the audit reads the model's probabilities on the images
    # it trained on, and a small data set is soon learnt by heart, wrong
    # labels included (BENCHMARKS.md, "Label audit").
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "3")

    result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir", data_dir,
                        "--audit", "--json")
    document = json.loads(result.stdout)
    assert document["images"] == 120
    with open(document["label_audit_csv"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    flagged = {row["file"] for row in rows}
    found, wrong = len(flagged & set(moved)), len(flagged - set(moved))
    assert found >= 5 and wrong <= 2, (found, wrong)   # of 9 moved
    for row in rows:
        if row["file"] in moved:
            assert row["suggested"] == row["file"].split("moved-")[1].split("-")[0]
    assert "--exclude" in result.stderr and "FlowIO.py" in result.stderr

    info = convert(image_dir, data_dir, workers=1, exclude=document["label_audit_csv"])
    assert sorted(info["excluded"]) == sorted(flagged) and not info["exclude_unmatched"]
    assert sum(info["num_examples"].values()) == 120 - len(rows)
    assert all(os.path.exists(path) for path in moved)  # the user's files stay


@pytest.mark.parametrize("extra", [["--watch"], ["--split", "train"], ["--checkpoint", "all"],
                                   ["--image_dir", "test"]])
def test_audit_refuses_the_other_modes_in_one_line(extra, capsys):
    with pytest.raises(SystemExit) as stopped:
        Evaluation.parse_args(["--audit", *extra])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--audit" in errors[0], errors
