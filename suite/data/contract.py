"""The data contract: what FlowIO.py writes into its output folder and every
reader relies on.

    labels.txt        one "index:name" line per class, in label order, UTF-8
                      (TF-slim's dataset_utils.write_label_file format)
    train-NNNNN-of-NNNNN.tfrecord, validation-...
                      the shards: tf.train.Example records with TF-slim's
                      keys (image/encoded, image/format, image/class/label,
                      image/height, image/width) and image/filename
    dataset.json      the report: classes, counts, shards, skipped files,
                      duplicates, options, a fingerprint of the data
"""
import json
import os
import re

import tensorflow as tf

from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write

LABELS_FILE = "labels.txt"
DATASET_FILE = "dataset.json"
SPLITS = ("train", "validation")
SHARD_NAME = re.compile(r"(train|validation)-[0-9]{5}-of-[0-9]{5}\.tfrecord\Z")


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


# ---------------------------------------------------------------------------
# The records
# ---------------------------------------------------------------------------
def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(encoded, label, height, width, filename):
    """One record: a JPEG, its label, size and file name (relative to its tree)."""
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes_feature(encoded),
        "image/format": _bytes_feature(b"jpeg"),
        "image/class/label": _int64_feature(label),
        "image/height": _int64_feature(height),
        "image/width": _int64_feature(width),
        # The name's own bytes: a file name need not be UTF-8 (fsencode
        # undoes Python's surrogate escapes; UTF-8 names are unchanged).
        "image/filename": _bytes_feature(os.fsencode(filename)),
    }))


# What readers parse of a record (suite.data.pipeline).
FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


# ---------------------------------------------------------------------------
# labels.txt and dataset.json
# ---------------------------------------------------------------------------
def write_labels(folder, names):
    """labels.txt in folder: one "index:name" line per class, in label order."""
    atomic_write(os.path.join(folder, LABELS_FILE),
                 "".join(f"{index}:{name}\n" for index, name in enumerate(names)))


def read_labels(path):
    """labels.txt ("index:name" lines) -> list of names in index order."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            index, sep, name = line.partition(":")
            if not sep or not index.isdigit() or int(index) != len(names):
                raise UserError(f"{path} line {line_number} is not 'index:name' in order: "
                                f"{line!r}; re-run FlowIO.py")
            names.append(name)
    return names


def load_dataset_info(data_dir):
    """dataset.json of a FlowIO output folder, with a clear error if absent."""
    path = os.path.join(data_dir, DATASET_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: run 'python FlowIO.py --output_dir {data_dir}' first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shard_paths(data_dir, split):
    """The paths of a split's shards, as dataset.json lists them; a missing
    one is a UserError."""
    info = load_dataset_info(data_dir)
    paths = [os.path.join(data_dir, name) for name in info["shards"].get(split, [])]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"{missing[0]} is missing: re-run FlowIO.py to rebuild {data_dir}")
    return paths
