"""What a classification answers, as useModel.py and the clients give it,
without TensorFlow: the ranked classes of one image, their text form, and
where an exported model keeps its class names."""
import os
import sys

import numpy as np


def labels_path(model_path):
    """Where an exported pixel model's class names are (one per line, in
    output order): beside it, named as it is with .labels.txt."""
    return os.path.splitext(model_path)[0] + ".labels.txt"


def rank(probabilities, labels, top_k=3, threshold=None):
    """One image's probabilities (labels order) -> {"predictions": the top_k
    [{"label", "probability"}] best first, "label": the best class, or
    "unknown" when its probability is below threshold}."""
    order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
    predictions = [{"label": labels[i], "probability": float(probabilities[i])}
                   for i in order]
    unsure = threshold is not None and predictions[0]["probability"] < threshold
    return {"predictions": predictions,
            "label": "unknown" if unsure else predictions[0]["label"]}


def image_name(result):
    """Which image a result answers: its "path", or for an image passed as
    bytes, a file object, a PIL image or an array, its "input" ("item 2: 5,120 bytes")."""
    return result["path"] if "path" in result else result["input"]


def print_results(results):
    """The text form: "path: label  (label p, ...)" per image on stdout, and
    "path: error: reason" per unusable input on stderr."""
    for result in results:
        if "error" in result:
            print(f"{image_name(result)}: error: {result['error']}", file=sys.stderr)
            continue
        guesses = ", ".join(f"{p['label']} {p['probability']:.3f}"
                            for p in result["predictions"])
        print(f"{image_name(result)}: {result['label']}  ({guesses})")
