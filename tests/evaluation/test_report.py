"""suite/evaluation/report.py: what is printed and drawn stays bounded for
thousands of classes while the files hold every class and cell, and the
files never write through a link planted in --output_dir."""
import csv
import json
import os

import numpy as np
from PIL import Image

from helpers import strict_json
from suite.evaluation.metrics import Predictions, compute_metrics, misclassified_rows
from suite.evaluation.report import SHOWN_CLASSES, output_files, print_report, write_outputs


def evaluated(labels, predicted, names, output_dir):
    """The metrics and misclassified rows Evaluation.py would have for these
    predictions, with output_files(output_dir)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    right = labels == predicted
    predictions = Predictions(labels, predicted, np.full(len(labels), 0.8),
                              np.where(right, 0.8, 0.1), np.where(right, 0, 3))
    metrics = compute_metrics(predictions, names)
    metrics.update(checkpoint="models/model.ckpt-100", flip_average=False,
                   files=output_files(str(output_dir)))
    files = [f"{names[label]}/{i}.png" for i, label in enumerate(labels)]
    return metrics, misclassified_rows(predictions, files, names)


def printed_matrix(text):
    """The printed confusion matrix: {(true index, predicted index): count}."""
    lines = text.split("confusion matrix (rows: true, columns: predicted, by class index)\n")[1]
    header, *rows = lines.strip("\n").splitlines()
    columns = [int(i) for i in header.split()]
    return {(int(row.split()[0]), column): int(count)
            for row in rows for column, count in zip(columns, row.split()[1:])}


def test_report_of_2000_classes_stays_bounded(tmp_path, capsys):
    """2,000 classes of one image each (the review's case): a few kilobytes
    printed and a PNG of at most a few megapixels, showing the biggest
    confusions; metrics.json and confusion_matrix.csv hold every class and
    every cell."""
    classes = 2000
    names = [f"class_{i:04d}" for i in range(classes)]
    labels = np.arange(classes)
    predicted = labels.copy()
    predicted[1000:1030] = 7    # thirty images taken for class 7
    predicted[1500:1600] = (labels[1500:1600] + 1) % classes   # scattered errors
    metrics, misclassified = evaluated(labels, predicted, names, tmp_path / "eval")
    print_report(metrics, names)
    out = capsys.readouterr().out
    write_outputs(metrics, misclassified, names, metrics["files"])

    assert len(out) < 10_000, len(out)
    assert f"the {SHOWN_CLASSES} most confused of {classes} classes" in out
    assert metrics["files"]["confusion_matrix_csv"] in out
    shown = printed_matrix(out)
    assert len(shown) == SHOWN_CLASSES ** 2
    assert shown[(1000, 7)] == 1 and shown[(7, 7)] == 1
    with Image.open(metrics["files"]["confusion_matrix_png"]) as image:
        assert image.width * image.height < 2_000_000, image.size
        image.verify()
    document = strict_json(metrics["files"]["metrics_json"])
    assert len(document["per_class"]) == classes
    with open(metrics["files"]["confusion_matrix_csv"], encoding="utf-8", newline="") as f:
        cells = list(csv.DictReader(f))
    assert sum(int(cell["count"]) for cell in cells) == classes
    assert {"true": "class_1000", "predicted": "class_0007", "count": "1"} in cells
    assert len(cells) == len(document["confusion_counts"]) == 1870 + 30 + 100


def test_report_of_few_classes_shows_every_class_and_cell(tmp_path, capsys):
    names = ["blue", "green", "red"]
    labels, predicted = [0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 2, 1, 1, 2, 2, 0]
    metrics, misclassified = evaluated(labels, predicted, names, tmp_path / "eval")
    print_report(metrics, names)
    out = capsys.readouterr().out
    write_outputs(metrics, misclassified, names, metrics["files"])
    assert "most confused" not in out
    dense = np.zeros((3, 3), dtype=int)
    np.add.at(dense, (labels, predicted), 1)
    assert printed_matrix(out) == {(i, j): dense[i, j] for i in range(3) for j in range(3)}
    with open(metrics["files"]["misclassified_csv"], encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    with Image.open(metrics["files"]["confusion_matrix_png"]) as image:
        image.verify()


def test_outputs_replace_planted_links_and_never_write_through_them(tmp_path):
    """Each file of --output_dir a symbolic link to a file elsewhere: the
    links are replaced by the outputs; the files they pointed to are intact."""
    output_dir = tmp_path / "eval"
    output_dir.mkdir()
    names = ["a", "b"]
    metrics, misclassified = evaluated([0, 1, 1], [0, 1, 0], names, output_dir)
    victims = {}
    for key, path in metrics["files"].items():
        if key == "report_html":  # suite.insight.page's (tests/insight/test_page.py)
            continue
        victim = tmp_path / f"precious-{key}"
        victim.write_text("keep me")
        os.symlink(victim, path)
        victims[path] = victim
    write_outputs(metrics, misclassified, names, metrics["files"])
    for path, victim in victims.items():
        assert victim.read_text() == "keep me"
        assert not os.path.islink(path)
    assert json.loads((output_dir / "metrics.json").read_text())["num_examples"] == 3
    assert sorted(os.listdir(output_dir)) == sorted(os.path.basename(p) for p in victims)
