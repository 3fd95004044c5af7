"""suite/insight/page.py and Evaluation.py's report.html: one page that opens
from the disk with nothing fetched, its confusion-matrix cells linking to
their images, the mistakes and the label audit's suspects as thumbnails read
from the records. (tests/test_Evaluation.py renders a real evaluation's page
in Chromium where it is installed.)"""
import html.parser
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from suite.data.contract import shard_paths
from suite.evaluation.evaluate import Source
from suite.evaluation.metrics import Predictions, compute_metrics, misclassified_rows
from suite.evaluation.report import output_files, shown_part
from suite.insight.audit import AUDIT_CSV, write_audit
from suite.insight.page import report_page, write_report_page


class Links(html.parser.HTMLParser):
    """Every src and href of a page, and its element ids."""

    def __init__(self, text):
        super().__init__()
        self.sources, self.links, self.ids, self.tags = [], [], set(), set()
        self.feed(text)

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        self.tags.add(tag)
        if "src" in attributes:
            self.sources.append(attributes["src"])
        if "href" in attributes:
            self.links.append(attributes["href"])
        if "id" in attributes:
            self.ids.add(attributes["id"])


def record_names(data_dir, split):
    return [os.fsdecode(tf.train.Example.FromString(record).features
                        .feature["image/filename"].bytes_list.value[0])
            for path in shard_paths(data_dir, split)
            for record in tf.compat.v1.io.tf_record_iterator(path)]


def evaluated(data_dir, wrong):
    """Metrics and misclassified rows of a validation split where the
    images at the indices `wrong` were taken for the next class."""
    names = record_names(data_dir, "validation")
    classes = ["blue", "green", "red"]
    labels = np.array([classes.index(name.split("/")[0]) for name in names])
    predicted = labels.copy()
    predicted[wrong] = (labels[wrong] + 1) % 3
    confidence = np.linspace(0.9, 0.5, len(labels))
    predictions = Predictions(labels, predicted, confidence, np.where(
        labels == predicted, confidence, 0.05), (labels != predicted).astype(int))
    metrics = compute_metrics(predictions, classes)
    metrics.update(checkpoint="models/best/model.ckpt-40", flip_average=False)
    return metrics, misclassified_rows(predictions, names, classes), classes


def test_page_holds_everything_it_shows(small_data, tmp_path):
    metrics, misclassified, classes = evaluated(small_data, [0, 1, 3])
    metrics["files"] = output_files(str(tmp_path))
    suspect = str(tmp_path / "suspect.png")
    Image.new("RGB", (40, 30), "red").save(suspect)
    write_audit([{"file": suspect, "label": "blue", "suggested": "red",
                  "label_probability": 0.01, "suggested_probability": 0.97,
                  "split": "train"}], str(tmp_path / AUDIT_CSV))
    victim = tmp_path / "precious.html"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "report.html")  # replaced, never written through
    write_report_page(metrics, misclassified, classes,
                      Source(small_data, "validation", 8), str(tmp_path / "models"))
    assert victim.read_text() == "keep me" and not os.path.islink(tmp_path / "report.html")
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    page = Links(text)

    assert "script" not in page.tags
    assert all(source.startswith("data:image/") for source in page.sources), page.sources
    assert all(link.startswith("#") for link in page.links), page.links
    assert {link[1:] for link in page.links} <= page.ids  # every cell's link lands
    assert len(page.links) == len({(r["true"], r["predicted"]) for r in misclassified})
    # a thumbnail per mistake in its list and in its cell's, and the suspect's
    assert len(page.sources) == 2 * len(misclassified) + 1
    assert "1 images look mislabelled" in text and "not run" not in text
    for name in classes:
        assert name in text


def test_page_without_audit_or_mistakes_says_so(small_data, tmp_path):
    metrics, misclassified, classes = evaluated(small_data, [])
    page = report_page(metrics, misclassified, classes, shown_part(metrics, classes),
                       Source(small_data, "validation", 8), str(tmp_path), None)
    assert "Most confident mistakes</h2><p>none" in page
    assert "python Evaluation.py --audit" in page
