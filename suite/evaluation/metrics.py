"""What an evaluation measures: top-1 (and top-5), macro-recall, the loss, a
per-class table, the confusion counts and the misclassified files.

Memory stays linear in images and classes, whatever their number: each
batch's probabilities (images x classes) are reduced at once to a few
numbers per image (Predictions), and the confusion matrix is kept as its
non-zero cells, of which there are at most one per image. A dense matrix
would grow with the square of the classes: 2,000 classes of one image each
are 4 million cells, almost all zero.
"""
import dataclasses

import numpy as np

from suite.plumbing.names import display_name

# The confusion counts, one row per non-zero cell (the CSV's columns too).
CONFUSION_COLUMNS = ("true", "predicted", "count")


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per image, what the metrics need of its probabilities: its true label,
    the predicted class and its probability, the true class's probability
    and rank (how many classes come before it: 0 when it is predicted)."""
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    true_probability: np.ndarray
    true_rank: np.ndarray

    @classmethod
    def of_batch(cls, probabilities, labels):
        """One batch's reduction: the probabilities are not kept."""
        labels = np.asarray(labels, dtype=np.int64)
        rows = np.arange(len(labels))
        predicted = probabilities.argmax(axis=1)
        true_probability = probabilities[rows, labels]
        # Ties ranked as argmax breaks them (the lower index first), so that
        # rank 0 is exactly "predicted": top-1 and top-5 never disagree.
        ahead = (probabilities > true_probability[:, None]) | (
            (probabilities == true_probability[:, None])
            & (np.arange(probabilities.shape[1]) < labels[:, None]))
        return cls(labels, predicted, probabilities[rows, predicted], true_probability,
                   ahead.sum(axis=1))

    @classmethod
    def concatenate(cls, batches):
        """The batches' reductions as one (no batch: no image)."""
        batches = list(batches) or [cls.of_batch(np.zeros((0, 1), np.float32), [])]
        return cls(*(np.concatenate([getattr(batch, field.name) for batch in batches])
                     for field in dataclasses.fields(cls)))


def confusion_cells(labels, predicted, num_classes):
    """The non-zero cells of the confusion matrix (rows: true class) as
    (true, predicted, count) arrays, by true then predicted class."""
    cells, counts = np.unique(np.asarray(labels, dtype=np.int64) * num_classes + predicted,
                              return_counts=True)
    return cells // num_classes, cells % num_classes, counts


def compute_metrics(predictions, class_names):
    """Accuracy, loss, per-class table and confusion counts of predictions
    (a Predictions)."""
    num_classes = len(class_names)
    labels, predicted = predictions.labels, predictions.predicted
    correct = labels == predicted
    support = np.bincount(labels, minlength=num_classes)
    predicted_count = np.bincount(predicted, minlength=num_classes)
    true_positives = np.bincount(labels[correct], minlength=num_classes)
    metrics = {
        "num_examples": int(len(labels)),
        "top1": float(correct.mean()),
        "macro_recall": None,
        "loss": float(-np.log(np.maximum(predictions.true_probability, 1e-12)).mean()),
        "per_class": [],
        "confusion_counts": [
            dict(zip(CONFUSION_COLUMNS, (class_names[i], class_names[j], int(count))))
            for i, j, count in zip(*confusion_cells(labels, predicted, num_classes))],
    }
    if num_classes >= 5:
        metrics["top5"] = float((predictions.true_rank < 5).mean())
    for index, name in enumerate(class_names):
        tp = true_positives[index]
        precision = tp / predicted_count[index] if predicted_count[index] else 0.0
        recall = tp / support[index] if support[index] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics["per_class"].append({"class": name, "precision": float(precision),
                                     "recall": float(recall), "f1": float(f1),
                                     "support": int(support[index])})
    # Over the classes that have examples here: a class without any has no recall.
    recalls = [row["recall"] for row in metrics["per_class"] if row["support"]]
    metrics["macro_recall"] = float(np.mean(recalls)) if recalls else 0.0
    return metrics


def most_confused(metrics, class_names, limit):
    """The indices (ascending) of at most `limit` classes: those of the
    biggest confusions (off-diagonal cells, the largest first, ties in class
    order), then the first classes; every class when there are no more than
    `limit`. Taken by pairs, so that the confusions show among them."""
    if len(class_names) <= limit:
        return list(range(len(class_names)))
    index = {name: i for i, name in enumerate(class_names)}
    errors = sorted((cell for cell in metrics["confusion_counts"]
                     if cell["true"] != cell["predicted"]), key=lambda cell: -cell["count"])
    chosen = dict.fromkeys(index[cell[side]] for cell in errors for side in ("true", "predicted"))
    chosen.update(dict.fromkeys(range(limit)))  # then the first classes
    return sorted(list(chosen)[:limit])


def confusion_submatrix(metrics, class_names, shown):
    """The dense confusion matrix of the classes `shown` (indices) among
    themselves, rows and columns in that order."""
    position = {class_names[i]: k for k, i in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)), dtype=np.int64)
    for cell in metrics["confusion_counts"]:
        if cell["true"] in position and cell["predicted"] in position:
            matrix[position[cell["true"]], position[cell["predicted"]]] = cell["count"]
    return matrix


def misclassified_rows(predictions, filenames, class_names):
    """Wrong predictions, most confident first (often labelling errors)."""
    rows = [{"file": display_name(filenames[i]), "true": class_names[predictions.labels[i]],
             "predicted": class_names[predictions.predicted[i]],
             "probability": float(predictions.confidence[i])}
            for i in np.flatnonzero(predictions.predicted != predictions.labels)]
    return sorted(rows, key=lambda row: -row["probability"])


def summary_line(metrics):
    """"top-1 0.7700  top-5 0.9850  macro-recall 0.7650  loss 0.7120"."""
    line = f"top-1 {metrics['top1']:.4f}"
    if "top5" in metrics:
        line += f"  top-5 {metrics['top5']:.4f}"
    return line + f"  macro-recall {metrics['macro_recall']:.4f}  loss {metrics['loss']:.4f}"
