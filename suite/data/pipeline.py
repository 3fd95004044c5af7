"""The input pipeline: FlowIO.py's records -> batches of (images, labels,
file names), for training, validation, Evaluation.py and the benchmarks.

Corrupt records raise tf.errors.DataLossError; they are never skipped
(ignore_errors() would silently drop the rest of a shard). A reader of a
whole split counts its records as it reads them, and the end of each pass
over the shards checks the count against dataset.json, at no extra read: a
count of 100,000 over shards that hold 240 would otherwise train a schedule
of the wrong length without a word. explain_data_error() turns each error
into one line naming the shard or the split.
"""
import os
import re

import tensorflow as tf

from suite.data.contract import (DATASET_FILE, FEATURES, check_records, load_dataset_info,
                                  shard_paths)
from suite.plumbing.errors import UserError, reason
from suite.plumbing.names import display_name
from suite.preprocessing.augment import Augmentation, preprocess_for_train
from suite.preprocessing.evaluation import preprocess_for_eval

# The functions given to tf.data are plain TensorFlow ops with no Python control
# flow on tensors, so AutoGraph's rewrite of their source (a second or more of
# every graph that reads records: BENCHMARKS.md, "Start-up") has nothing to
# convert: graph_fn skips it.
graph_fn = tf.autograph.experimental.do_not_convert

LABEL_OUT_OF_RANGE = "a record's label is not one of the classes of dataset.json"
RECORD_COUNT = "records in the split"  # marks the count check's error (_counted)


def _parse_record(record, num_classes):
    """One serialized Example -> its features, with a label checked to be one
    of the classes: a label outside them would otherwise train as no class
    at all (tf.one_hot gives zeros) or be counted under a wrong one."""
    features = tf.io.parse_single_example(record, FEATURES)
    label = features["image/class/label"]
    in_range = tf.logical_and(label >= 0, label < num_classes)
    with tf.control_dependencies([tf.debugging.Assert(in_range, [LABEL_OUT_OF_RANGE, label])]):
        features["image/class/label"] = tf.identity(label)
    return features


def make_dataset(data_dir, split, image_size, batch_size, training, preprocessing=None,
                 augmentation=Augmentation(), seed=None, shard=None):
    """tf.data pipeline of (images, labels, filenames) batches for one split.

    training: shuffled shards and records, the per-image `augmentation` (an
      Augmentation: its preset and random erasing), repeats forever, drops
      the last partial batch. Otherwise: every record once, in order, with
      the eval transform.
    preprocessing: the model's model.json "preprocessing"
      (suite.preprocessing.normalization); None for ImageNet's mean and std.
    shard: (index, count): this reader's share when `count` readers (train.py's
      workers) share the split: every count-th file, or with fewer files than
      readers, every count-th record.
    """
    info = load_dataset_info(data_dir)
    paths = shard_paths(data_dir, split, info)
    if not paths:
        raise UserError(f"{data_dir} has no {split} records: re-run FlowIO.py "
                        f"with --validation_ratio above 0 or --validation_dir")
    check_records(paths[0])
    num_classes = len(info["classes"])
    records = _records(paths, training, seed, shard, info["num_examples"][split]).map(
        graph_fn(lambda r: _parse_record(r, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        records = records.shuffle(10000, seed=seed, reshuffle_each_iteration=True).repeat()
        seeds = tf.data.Dataset.random(seed=seed).batch(2)  # an augmentation seed per image
        dataset = tf.data.Dataset.zip((records, seeds)).map(graph_fn(
            lambda f, s: (preprocess_for_train(f["image/encoded"], image_size, s,
                                               augmentation.preset, preprocessing,
                                               augmentation.random_erasing),
                          tf.cast(f["image/class/label"], tf.int32), f["image/filename"])),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
    else:
        dataset = records.map(graph_fn(
            lambda f: (preprocess_for_eval(f["image/encoded"], image_size, preprocessing),
                       tf.cast(f["image/class/label"], tf.int32), f["image/filename"])),
            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def _records(paths, training, seed, shard, expected):
    """The serialized records of the shards at paths: this reader's share
    (shard), in training from the shards in a shuffled order. A reader that
    reads every shard (alone, or sharing out records) checks each pass holds
    `expected` records; a share of the files has no count of its own in
    dataset.json, so it is not counted (train.py's validation, which reads
    the whole split, still is)."""
    index, count = shard or (0, 1)
    by_record = count > len(paths)
    if not by_record:
        paths = paths[index::count]  # before any shuffle, so the shares never overlap
    # As bytes: a folder name need not be UTF-8, and a tf.string from str must be.
    files = tf.data.Dataset.from_tensor_slices([os.fsencode(path) for path in paths])
    if training and not by_record:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # Unseeded training takes records in whatever order they arrive (faster);
    # readers that share the records out by position need one fixed order.
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
                               num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=not training or seed is not None or by_record)
    if by_record or count == 1:
        records = _counted(records, expected)
    return records.shard(count, index) if by_record else records


def _counted(records, expected):
    """records, failing at the end of each pass unless there were `expected`
    of them: a marked end is appended, counted past and dropped. The
    failure is an InvalidArgumentError that explain_data_error reads."""
    def mark(is_end):
        return graph_fn(lambda record: (record, is_end))

    @graph_fn
    def count(seen, element):
        record, is_end = element
        complete = tf.logical_or(tf.logical_not(is_end), tf.equal(seen, expected))
        with tf.control_dependencies([tf.debugging.Assert(complete, [RECORD_COUNT, seen])]):
            return seen + 1, (tf.identity(record), is_end)

    @graph_fn
    def is_record(record, is_end):
        return tf.logical_not(is_end)

    @graph_fn
    def record_only(record, is_end):
        return record

    end = tf.data.Dataset.from_tensors(tf.constant(b"")).map(mark(True))
    return (records.map(mark(False)).concatenate(end)
            .scan(tf.constant(0, tf.int64), count).filter(is_record).map(record_only))


def explain_data_error(data_dir, split, error):
    """A one-line UserError naming the shard behind an error reading a split:
    a damaged record (DataLossError), a label outside the classes, or
    shards that hold more or fewer records than dataset.json lists."""
    info = load_dataset_info(data_dir)
    text = getattr(error, "message", None) or str(error)
    counted = re.search(rf"\[{RECORD_COUNT}\] \[(\d+)\]", text)
    if counted:
        return UserError(f"the {split} shards of {data_dir} hold {counted.group(1)} records but "
                         f"its {DATASET_FILE} lists {info['num_examples'][split]}: re-run "
                         f"FlowIO.py to rebuild {data_dir}")
    num_classes = len(info["classes"])
    for path in shard_paths(data_dir, split, info):
        try:
            for record in tf.compat.v1.io.tf_record_iterator(os.fsencode(path)):
                label = tf.train.Example.FromString(record).features.feature[
                    "image/class/label"].int64_list.value
                if not label or not 0 <= label[0] < num_classes:
                    return UserError(f"{display_name(path)} has a record labelled "
                                     f"{list(label)}, outside the {num_classes} classes of "
                                     f"{data_dir}/{DATASET_FILE}: re-run FlowIO.py to "
                                     f"rebuild {data_dir}")
        except tf.errors.DataLossError as shard_error:
            return UserError(f"{display_name(path)} is damaged ({reason(shard_error)}): "
                             f"re-run FlowIO.py to rebuild {data_dir}")
    return UserError(f"reading {data_dir} failed ({reason(error)}): re-run FlowIO.py")
