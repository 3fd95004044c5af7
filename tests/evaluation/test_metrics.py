"""suite/evaluation/metrics.py: the metrics of predictions, checked against
a plain dense count, and memory that stays linear for thousands of classes."""
import tracemalloc

import numpy as np
import pytest

from suite.evaluation.metrics import (Predictions, compute_metrics, confusion_submatrix,
                                      misclassified_rows, most_confused)


def random_probabilities(rng, images, classes):
    p = rng.random((images, classes), dtype=np.float32) ** 4  # some confident rows
    return p / p.sum(axis=1, keepdims=True)


def in_batches(probabilities, labels, size):
    return Predictions.concatenate(
        Predictions.of_batch(probabilities[start:start + size], labels[start:start + size])
        for start in range(0, len(labels), size))


def predictions_of(labels, predicted):
    """Predictions with these labels and predicted classes, the predicted
    class's probability 0.9 (the true class's too when it is right)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    right = labels == predicted
    return Predictions(labels, predicted, np.full(len(labels), 0.9),
                       np.where(right, 0.9, 0.05), np.where(right, 0, 1))


def test_metrics_agree_with_a_dense_count():
    """Batch by batch, the reductions give what the whole probabilities and a
    dense confusion matrix give."""
    rng = np.random.default_rng(1)
    classes, images = 7, 300
    probabilities = random_probabilities(rng, images, classes)
    labels = rng.integers(0, classes, images)
    names = [f"c{i}" for i in range(classes)]
    metrics = compute_metrics(in_batches(probabilities, labels, 64), names)

    predicted = probabilities.argmax(axis=1)
    dense = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(dense, (labels, predicted), 1)
    assert metrics["top1"] == pytest.approx(np.trace(dense) / images)
    top5 = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
    assert metrics["top5"] == pytest.approx((top5 == labels[:, None]).any(axis=1).mean())
    assert metrics["loss"] == pytest.approx(
        -np.log(probabilities[np.arange(images), labels]).mean(), rel=1e-6)
    cells = {(cell["true"], cell["predicted"]): cell["count"]
             for cell in metrics["confusion_counts"]}
    assert cells == {(names[i], names[j]): dense[i, j]
                     for i in range(classes) for j in range(classes) if dense[i, j]}
    for i, row in enumerate(metrics["per_class"]):
        assert row["support"] == dense[i].sum()
        assert row["recall"] == pytest.approx(dense[i, i] / dense[i].sum())
        assert row["precision"] == pytest.approx(dense[i, i] / dense[:, i].sum())
    assert (confusion_submatrix(metrics, names, list(range(classes))) == dense).all()


def test_ties_rank_as_the_prediction_breaks_them():
    """Six classes all equally likely: argmax predicts class 0, so only its
    images are right (top-1 1/6), and class 5 is sixth (top-5 5/6)."""
    probabilities = np.full((6, 6), 1 / 6, dtype=np.float32)
    metrics = compute_metrics(Predictions.of_batch(probabilities, np.arange(6)),
                              [f"c{i}" for i in range(6)])
    assert metrics["top1"] == pytest.approx(1 / 6)
    assert metrics["top5"] == pytest.approx(5 / 6)


def test_memory_stays_linear_for_thousands_of_classes():
    """2,000 classes of one image each: a dense confusion matrix alone would
    be 4 million cells (16 MB even as int32); the whole evaluation of the
    predictions stays far below that."""
    classes = 2000
    rng = np.random.default_rng(2)
    labels = np.arange(classes)
    names = [f"class_{i:04d}" for i in range(classes)]
    tracemalloc.start()
    try:
        batches = []
        for start in range(0, classes, 64):
            batch = labels[start:start + 64]
            batches.append(Predictions.of_batch(random_probabilities(rng, len(batch), classes),
                                                batch))
        predictions = Predictions.concatenate(batches)
        metrics = compute_metrics(predictions, names)
        shown = most_confused(metrics, names, 20)
        confusion_submatrix(metrics, names, shown)
        misclassified_rows(predictions, [f"{i}.png" for i in range(classes)], names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(metrics["per_class"]) == classes
    assert sum(cell["count"] for cell in metrics["confusion_counts"]) == classes
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"


def test_most_confused_are_the_classes_of_the_biggest_confusions():
    names = [f"c{i}" for i in range(100)]
    labels = [50, 50, 50, 70, 70, 90] + list(range(30))
    predicted = [60, 60, 60, 71, 71, 10] + list(range(30))
    metrics = compute_metrics(predictions_of(labels, predicted), names)
    assert most_confused(metrics, names, 4) == [50, 60, 70, 71]
    assert most_confused(metrics, names, 7) == [0, 10, 50, 60, 70, 71, 90]  # then c0
    assert most_confused(metrics, names, 100) == list(range(100))
    matrix = confusion_submatrix(metrics, names, [50, 60, 70, 71])
    assert matrix.tolist() == [[0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2], [0, 0, 0, 0]]


def test_misclassified_rows_most_confident_first():
    names = ["a", "b", "c"]
    predictions = Predictions(np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2]),
                              np.array([0.6, 0.9, 0.8, 0.7]), np.zeros(4), np.ones(4))
    rows = misclassified_rows(predictions, ["w.png", "x.png", "y.png", "z.png"], names)
    assert [(row["file"], row["true"], row["predicted"]) for row in rows] == [
        ("y.png", "c", "a"), ("z.png", "a", "c"), ("w.png", "a", "b")]
