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
from google.protobuf import message

from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write
from suite.plumbing.names import display_name

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
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {display_name(path)} as UTF-8 text "
                        f"({getattr(error, 'strerror', None) or error}); re-run FlowIO.py")
    for line_number, line in enumerate(lines, start=1):
        if not line:
            continue
        index, sep, name = line.partition(":")
        if not sep or not index.isdigit() or int(index) != len(names):
            raise UserError(f"{display_name(path)} line {line_number} is not 'index:name' in "
                            f"order: {line!r}; re-run FlowIO.py")
        names.append(name)
    return names


# What every reader of dataset.json relies on (the rest is the report's).
REQUIRED_KEYS = ("classes", "counts", "num_examples", "shards", "image_size", "options",
                 "fingerprint")


def load_dataset_info(data_dir):
    """dataset.json of a FlowIO output folder, checked rather than trusted: its
    fields (schema_problem), its classes against labels.txt (a renamed or
    swapped class would train labels that contradict the model's labels.txt)
    and its shards inside data_dir (a path such as ../other/x would read
    another folder). Each problem is one UserError naming the file."""
    path = os.path.join(data_dir, DATASET_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: run 'python FlowIO.py --output_dir {data_dir}' first")
    rebuild = f"re-run FlowIO.py to rebuild {data_dir}"
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}")
    except ValueError as error:  # not JSON, or not UTF-8 (UnicodeDecodeError is one too)
        raise UserError(f"{path} is not valid JSON ({error}): {rebuild}")
    problem = schema_problem(info)
    if problem is None:
        problem = _labels_problem(data_dir, info["classes"])
    if problem is None:
        problem = next(filter(None, (_shard_problem(data_dir, name) for split in SPLITS
                                     for name in info["shards"][split])), None)
    if problem is not None:
        raise UserError(f"{path}: {problem}; {rebuild}")
    return info


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _per_split(value, is_item):
    """Whether value is {"train": x, "validation": y} with is_item(x) and is_item(y)."""
    return isinstance(value, dict) and all(is_item(value.get(split)) for split in SPLITS)


def schema_problem(info):
    """The first way info (a parsed dataset.json) is not what readers rely
    on, as a phrase, or None: the keys they read, of the types they read
    them as, counts that add up."""
    if not isinstance(info, dict):
        return "not a JSON object"
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        return "lacks " + ", ".join(f'"{key}"' for key in missing)
    classes, counts, examples = info["classes"], info["counts"], info["num_examples"]
    if not (isinstance(classes, list) and classes
            and all(isinstance(name, str) and name for name in classes)):
        return '"classes" is not a list of class names'
    if len(set(classes)) < len(classes):
        return '"classes" names a class twice'
    if not _per_split(examples, _is_count):
        return '"num_examples" is not {"train": count, "validation": count}'
    if not (isinstance(counts, dict) and sorted(counts) == sorted(classes)
            and all(_per_split(c, _is_count) for c in counts.values())):
        return '"counts" is not {"train": count, "validation": count} for each of "classes"'
    for split in SPLITS:
        total = sum(counts[name][split] for name in classes)
        if total != examples[split]:
            return (f'"num_examples" lists {examples[split]} {split} records but "counts" '
                    f'add up to {total}')
    if not _per_split(info["shards"], lambda names: isinstance(names, list) and all(
            isinstance(name, str) and name and "\0" not in name for name in names)):
        return '"shards" is not {"train": [file names], "validation": [file names]}'
    size = info["image_size"]
    if not (isinstance(size, dict) and all(
            isinstance(size.get(side), dict) and isinstance(size[side].get("median"), (int, float))
            for side in ("height", "width"))):
        return '"image_size" is not {"height": {"median": ...}, "width": {"median": ...}}'
    if not isinstance(info["options"], dict) or not isinstance(info["fingerprint"], str):
        return '"options" is not an object or "fingerprint" not a string'
    return None


def _labels_problem(data_dir, classes):
    """How labels.txt disagrees with dataset.json's classes, or None."""
    path = os.path.join(data_dir, LABELS_FILE)
    if not os.path.exists(path):
        return f"{path} is missing"
    labels = read_labels(path)
    if labels == classes:
        return None
    if len(labels) != len(classes):
        return f"lists {len(classes)} classes but {path} {len(labels)}"
    index = next(i for i, (a, b) in enumerate(zip(classes, labels)) if a != b)
    return (f"class {index} is '{display_name(classes[index])}' but '{display_name(labels[index])}'"
            f" in {path}")


def _shard_problem(data_dir, name):
    """Why a shard name of dataset.json is not a file inside data_dir
    (symbolic links resolved), or None."""
    folder = os.path.realpath(data_dir)
    real = os.path.realpath(os.path.join(folder, name))
    if os.path.isabs(name) or os.path.commonpath([folder, real]) != folder or real == folder:
        return (f"shard '{display_name(name)}' is not a file inside {data_dir} "
                f"(it resolves to {display_name(real)})")
    return None


def shard_paths(data_dir, split, info=None):
    """The paths of a split's shards, as dataset.json (info, read if None)
    lists them; a missing one is a UserError."""
    info = info or load_dataset_info(data_dir)
    paths = [os.path.join(data_dir, name) for name in info["shards"][split]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"{missing[0]} is missing: re-run FlowIO.py to rebuild {data_dir}")
    return paths


JPEG_START = b"\xff\xd8"  # every JPEG's first two bytes (the SOI marker)


def check_records(path):
    """Refuses the shard at path unless its first record is one FlowIO.py
    writes: a tf.train.Example holding a JPEG under image/encoded. Records of
    other tools (TF-slim's download_and_convert scripts store PNG) would fail
    in the JPEG decoders that training and the eval transform rely on; one
    record tells, without reading the shard. A damaged shard is left to the
    pipeline, which names it (explain_data_error)."""
    try:
        first = next(iter(tf.compat.v1.io.tf_record_iterator(os.fsencode(path))), None)
    except tf.errors.OpError:
        return
    if first is None:
        return
    try:
        feature = tf.train.Example.FromString(first).features.feature
    except message.DecodeError:
        feature = {}
    encoded = feature["image/encoded"].bytes_list.value if "image/encoded" in feature else []
    if encoded and encoded[0].startswith(JPEG_START):
        return
    stored = (feature["image/format"].bytes_list.value if "image/format" in feature else [])
    what = (f"{stored[0].decode('ascii', 'replace')} images" if stored else
            "images that are not JPEG" if encoded else "records without image/encoded")
    raise UserError(f"{display_name(path)} holds {what}, not FlowIO.py's JPEG records (TF-slim's "
                    f"download_and_convert scripts write PNG): run FlowIO.py on the images' "
                    f"class folders and read its --output_dir")
