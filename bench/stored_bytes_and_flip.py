"""What the JPEG step and a flip average do to a trained model's top-1.

    python bench/stored_bytes_and_flip.py --work_dir DIR

DIR is a finished `bench/fashion_mnist.py --work_dir DIR` run: its models/,
its tfrecords/ (FlowIO's validation split of the training file) and test/
(the official test file as class folders). One checkpoint (best/ when there
is one, as Evaluation.py) through useModel.Classifier
(suite.prediction.classifier), the same graph as useModel.py, scored four ways:

- as stored: the bytes FlowIO keeps (a PNG re-encoded as JPEG, quality 95,
  by suite.images.decoding), which is what Evaluation.py and useModel.py see;
- lossless: the test files' own PNG bytes (validation exists only as stored);
- flip average, lossless flip: the mean of the probabilities of the image and
  of its left-right flip, the flip written as PNG;
- flip average, JPEG flip: the same with the flip re-encoded as FlowIO would.

Validation chooses; the test set only reports (BENCHMARKS.md, "Accuracy").
The suite's own flip average, train.py --flip_average, mirrors the decoded
stored pixels inside the graph; this script measures the variants around it.
"""
import argparse
import io
import os
import sys

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tensorflow as tf  # noqa: E402

from suite.data.contract import shard_paths  # noqa: E402
from suite.data.folders import find_images  # noqa: E402
from suite.images.decoding import (encode_image_bytes, encode_image_file,  # noqa: E402
                                   read_image_file)
from suite.prediction.classifier import Classifier  # noqa: E402


def flipped_png(encoded):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(encoded)).transpose(Image.FLIP_LEFT_RIGHT).save(buffer, "PNG")
    return buffer.getvalue()


def flipped_as_stored(encoded):
    return encode_image_bytes(flipped_png(encoded))[0]


def top1(classifier, encoded, labels, flip=None, batch=256):
    """Top-1 of the image alone, or of its mean with flip(image)."""
    correct = 0
    for start in range(0, len(encoded), batch):
        chunk = encoded[start:start + batch]
        probabilities = classifier.probabilities(chunk)
        if flip is not None:
            probabilities = (probabilities + classifier.probabilities([flip(e) for e in chunk])) / 2
        correct += int((probabilities.argmax(1) == labels[start:start + batch]).sum())
    return correct / len(encoded)


def validation_records(records_dir):
    encoded, labels = [], []
    for path in shard_paths(records_dir, "validation"):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            feature = tf.train.Example.FromString(record).features.feature
            encoded.append(feature["image/encoded"].bytes_list.value[0])
            labels.append(feature["image/class/label"].int64_list.value[0])
    return encoded, np.array(labels)


def test_files(test_dir, class_names):
    """Every file of the class folders, as Evaluation.py --image_dir finds them."""
    found = find_images(test_dir)[0]
    paths, labels = [], []
    for index, name in enumerate(class_names):
        paths += found.get(name, [])
        labels += [index] * len(found.get(name, []))
    return paths, np.array(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", required=True, help="a finished bench/fashion_mnist.py run")
    parser.add_argument("--checkpoint", default=None, help="as useModel.py (default: best/)")
    args = parser.parse_args()
    classifier = Classifier(os.path.join(args.work_dir, "models"), args.checkpoint)
    print(classifier.checkpoint_description)

    encoded, labels = validation_records(os.path.join(args.work_dir, "tfrecords"))
    paths, test_labels = test_files(os.path.join(args.work_dir, "test"), classifier.labels)
    stored = [encode_image_file(p)[0] for p in paths]
    lossless = [read_image_file(p) for p in paths]

    rows = [
        ("as stored (Evaluation.py)", top1(classifier, encoded, labels),
         top1(classifier, stored, test_labels)),
        ("lossless test files", None, top1(classifier, lossless, test_labels)),
        ("flip average, lossless flip", top1(classifier, encoded, labels, flipped_png),
         top1(classifier, lossless, test_labels, flipped_png)),
        ("flip average, JPEG flip", top1(classifier, encoded, labels, flipped_as_stored),
         top1(classifier, stored, test_labels, flipped_as_stored)),
    ]
    print(f"| evaluated on ({len(labels)} validation, {len(test_labels)} test images) "
          "| validation top-1 | test top-1 |\n|---|---:|---:|")
    for name, validation, test in rows:
        shown = "-" if validation is None else f"{validation:.4f}"
        print(f"| {name} | {shown} | {test:.4f} |")


if __name__ == "__main__":
    main()
