"""What an evaluation measures: top-1 (and top-5), macro-recall, the loss, a
per-class table and the confusion matrix, and the misclassified files."""
import numpy as np

from suite.plumbing.names import display_name


def compute_metrics(probabilities, labels, class_names):
    """Accuracy, loss, per-class table and confusion matrix (rows: true class)."""
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    metrics = {
        "num_examples": int(len(labels)),
        "top1": float((predicted == labels).mean()),
        "macro_recall": None,
        "loss": float(-np.log(np.maximum(true_probability, 1e-12)).mean()),
        "per_class": [],
        "confusion_matrix": confusion.tolist(),
    }
    if num_classes >= 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    for index, name in enumerate(class_names):
        tp = confusion[index, index]
        support, predicted_count = confusion[index].sum(), confusion[:, index].sum()
        precision = tp / predicted_count if predicted_count else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics["per_class"].append({"class": name, "precision": float(precision),
                                     "recall": float(recall), "f1": float(f1),
                                     "support": int(support)})
    # Over the classes that have examples here: a class without any has no recall.
    recalls = [row["recall"] for row in metrics["per_class"] if row["support"]]
    metrics["macro_recall"] = float(np.mean(recalls)) if recalls else 0.0
    return metrics


def misclassified_rows(probabilities, labels, filenames, class_names):
    """Wrong predictions, most confident first (often labelling errors)."""
    predicted = probabilities.argmax(axis=1)
    rows = [{"file": display_name(filenames[i]), "true": class_names[labels[i]],
             "predicted": class_names[predicted[i]],
             "probability": float(probabilities[i, predicted[i]])}
            for i in np.flatnonzero(predicted != labels)]
    return sorted(rows, key=lambda row: -row["probability"])


def summary_line(metrics):
    """"top-1 0.7700  top-5 0.9850  macro-recall 0.7650  loss 0.7120"."""
    line = f"top-1 {metrics['top1']:.4f}"
    if "top5" in metrics:
        line += f"  top-5 {metrics['top5']:.4f}"
    return line + f"  macro-recall {metrics['macro_recall']:.4f}  loss {metrics['loss']:.4f}"
