"""Classifies images with a trained model.

    python useModel.py IMAGE|FOLDER|GLOB [...] [--model_dir models] [--top_k 3]
                       [--threshold P] [--json] [--checkpoint PATH|best]

Folders are searched recursively; a file that cannot be read gets one error
line (or a JSON entry with "error") and the others go on. The exit code is
non-zero only when nothing could be classified. Each image is decoded and
preprocessed exactly as FlowIO.py stores it and Evaluation.py reads it (EXIF
orientation, colour conversion, --max_side, centre crop).

From Python, load once and classify many:

    from useModel import Classifier
    classifier = Classifier("models")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result["predictions"][0])  # {"label": ..., "probability": ...}
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

import FlowIO
import resnet
import train
import tensorflow as tf


class Classifier:
    """A trained model loaded once: predict() classifies lists of image files."""

    def __init__(self, model_dir="models", checkpoint=None, batch_size=32):
        self.manifest = train.load_manifest(model_dir)
        self.labels = self.manifest["labels"]
        self.batch_size = batch_size
        if checkpoint in (None, "best"):
            folder = os.path.join(model_dir, train.BEST_DIR) if checkpoint else model_dir
            found = train.list_checkpoints(folder)
            if not found:
                raise FlowIO.UserError(f"no checkpoint in {folder}: run train.py first")
            checkpoint = found[0]
        self.checkpoint = checkpoint
        self._graph = tf.Graph()
        with self._graph.as_default():
            # The input is encoded JPEG bytes, as FlowIO stores them; the graph
            # runs the evaluation preprocessing, so prediction = evaluation.
            self._encoded = tf.compat.v1.placeholder(tf.string, [None], name="encoded_images")
            size = self.manifest["image_size"]
            images = tf.map_fn(lambda e: FlowIO.preprocess_for_eval(e, size), self._encoded,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
            logits = resnet.build(images, self.manifest["model"], len(self.labels),
                                  is_train=False)
            self._probabilities = tf.nn.softmax(logits, name="probabilities")
            self._session = tf.compat.v1.Session(graph=self._graph)
            tf.compat.v1.train.Saver().restore(self._session, checkpoint)

    def probabilities(self, encoded_images):
        """[len(encoded_images), num_classes] for JPEG bytes from encode_image_file."""
        return self._session.run(self._probabilities, {self._encoded: encoded_images})

    def predict(self, paths, top_k=3, threshold=None):
        """One dict per path: {"path", "predictions": [{"label", "probability"}],
        "label"} or {"path", "error"}. "label" is the best class, or "unknown"
        when its probability is below threshold."""
        results = [{"path": path} for path in paths]
        max_side = self.manifest["preprocessing"].get("max_side")
        for start in range(0, len(paths), self.batch_size):
            batch, encoded = [], []
            for result in results[start:start + self.batch_size]:
                try:
                    encoded.append(FlowIO.encode_image_file(result["path"], max_side)[0])
                    batch.append(result)
                except FlowIO.BadImage as error:
                    result["error"] = str(error)
            if not encoded:
                continue
            for result, row in zip(batch, self.probabilities(encoded)):
                order = np.argsort(-row)[:max(1, top_k)]
                result["predictions"] = [{"label": self.labels[i], "probability": float(row[i])}
                                         for i in order]
                best = result["predictions"][0]
                unsure = threshold is not None and best["probability"] < threshold
                result["label"] = "unknown" if unsure else best["label"]
        return results

    def close(self):
        self._session.close()


def expand_inputs(inputs):
    """Files, folders (recursively, hidden entries skipped) and glob patterns ->
    (paths, problems) where problems are inputs that matched nothing."""
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = FlowIO.walk_files(item)
            if not found:
                problems.append({"path": item, "error": "folder has no files"})
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                problems.append({"path": item, "error": "pattern matches no file"})
            paths.extend(matches)
        else:
            problems.append({"path": item, "error": "no such file or folder"})
    return paths, problems


def main():
    parser = argparse.ArgumentParser(description="Classify images with a trained model.")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--model_dir", default="models", help="(default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="a checkpoint prefix or 'best' (default: the newest)")
    parser.add_argument("--top_k", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="below this probability the answer is 'unknown'")
    parser.add_argument("--batch_size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    paths, problems = expand_inputs(args.images)
    classifier = Classifier(args.model_dir, args.checkpoint, args.batch_size)
    results = problems + classifier.predict(paths, args.top_k, args.threshold)
    classified = sum(1 for r in results if "predictions" in r)
    if args.json:
        print(json.dumps({"checkpoint": classifier.checkpoint, "results": results},
                         ensure_ascii=False, indent=1))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['path']}: error: {result['error']}", file=sys.stderr)
                continue
            guesses = ", ".join(f"{p['label']} {p['probability']:.3f}"
                                for p in result["predictions"])
            print(f"{result['path']}: {result['label']}  ({guesses})")
    sys.exit(0 if classified else 1)


if __name__ == "__main__":
    FlowIO.run_main(main)
