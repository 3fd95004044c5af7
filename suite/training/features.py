"""The frozen network's features of the training and validation images, for
the head stage (suite.training.stages): what the global average pool hands
the classifier, computed once and cached beside the run, so that an epoch of
the head costs milliseconds instead of a forward pass per image.

    --model_dir/features/
      features.json          what they were computed from (the key), checked
                             at every use: another network, weights, image
                             size, preprocessing or data computes them afresh
      train.npy, train_labels.npy            views x images rows, float16
      validation.npy, validation_labels.npy  the eval transform, one row each

Training rows are the training pipeline's augmented images (its crops,
flips and random erasing; mixup and CutMix mix batches, so they are left to
the stages through the network), `views` passes over the split; the
validation rows are exactly what validation through the network would see.
Half precision halves the memory and the file, and costs the head nothing:
float16 keeps three significant digits of each feature.
"""
import collections
import io
import json
import os
import time

import numpy as np
import tensorflow as tf

from suite.data.pipeline import explain_data_error, make_dataset
from suite.hardware.precision import session_config
from suite.model.checkpoints import restore_newest
from suite.model.network import build_network
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write, atomic_write_json
from suite.training.warm_start import warm_start

FOLDER = "features"
KEY_FILE = "features.json"

# The arrays, and how fast the network computed them (None when cached
# before: the time budget then has no measure of the network's speed).
Features = collections.namedtuple(
    "Features", "train train_labels validation validation_labels images_per_second")
ARRAYS = Features._fields[:4]


def key(config, stage):
    """What the cached features depend on."""
    network = config.network.manifest()
    return {"data": config.data.get("fingerprint"), "model": network["model"],
            "shortcut": network["shortcut"], "stem": network["stem"],
            "image_size": network["image_size"], "preprocessing": network["preprocessing"],
            "weights": config.network.pretrained or config.start.weights,
            "augmentation": config.augmentation.record(), "views": stage.views,
            "flip_average": network["flip_average"]}


def features(config, stage, budget=None):
    """The Features of config's data for the head stage: from the cache when
    its key matches, else computed (printing how long it took) and cached.
    budget (suite.training.time_budget.Budget): fewer views when all of them
    would take more than its share."""
    folder = os.path.join(config.model_dir, FOLDER)
    wanted = key(config, stage)
    cached = _load(folder, wanted)
    if cached is not None:
        print(f"the network's features: cached in {folder}", flush=True)
        return cached
    computed = _compute(config, stage, budget)
    _save(folder, wanted, computed)
    return computed


def _load(folder, wanted):
    try:
        with open(os.path.join(folder, KEY_FILE), encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("key") != json.loads(json.dumps(wanted)):
            return None
        return Features(*(np.load(os.path.join(folder, name + ".npy"), allow_pickle=False)
                          for name in ARRAYS), stored.get("images_per_second"))
    except (OSError, ValueError):  # none yet, or damaged: computed afresh
        return None


def _save(folder, wanted, computed):
    try:
        os.makedirs(folder, exist_ok=True)
        for name, array in zip(ARRAYS, computed):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            atomic_write(os.path.join(folder, name + ".npy"), buffer.getvalue())
        atomic_write_json(os.path.join(folder, KEY_FILE),  # last: the arrays are complete
                          {"key": wanted, "images_per_second": computed.images_per_second},
                          indent=1)
    except OSError as error:
        raise UserError(f"cannot write the features cache {folder} ({reason(error)}): free "
                        f"some space or fix the permissions of --model_dir")


def _compute(config, stage, budget):
    """Runs the eval-mode network (its batch norm frozen) over `views`
    augmented passes of the training split and one plain pass of the
    validation split."""
    manifest = config.network.manifest()
    info_counts = config.data["num_examples"]
    graph = tf.Graph()
    with graph.as_default():
        with tf.device("/cpu:0"):
            train = make_dataset(config.data_dir, "train", config.network.image_size,
                                 config.optimisation.batch_size, training=True,
                                 preprocessing=manifest["preprocessing"],
                                 augmentation=config.augmentation, seed=config.seed)
            train_next = tf.compat.v1.data.make_one_shot_iterator(train).get_next()
        validation_next = None
        if info_counts["validation"]:
            with tf.device("/cpu:0"):
                validation = make_dataset(config.data_dir, "validation",
                                          config.network.image_size,
                                          config.optimisation.batch_size, training=False,
                                          preprocessing=manifest["preprocessing"])
                validation_next = tf.compat.v1.data.make_one_shot_iterator(
                    validation).get_next()
        images = tf.compat.v1.placeholder(tf.float32, [None] + [manifest["image_size"]] * 2
                                          + [3])
        end_points = {}
        # Each view's own features: the mirror average is the predictions'
        # (suite.model.network), and the training views are mirrored already.
        build_network(images, dict(manifest, flip_average=False), is_train=False,
                      end_points=end_points, compute_dtype=config.precision.graph_dtype)
        pooled = tf.cast(tf.reshape(end_points["pool"], [tf.shape(images)[0], -1]), tf.float32)
        with tf.compat.v1.Session(config=session_config(False, config.precision)) as session:
            _load_weights(session, config)
            started = time.time()
            rows = _rows(session, train_next, images, pooled, info_counts["train"],
                         stage.views, budget, config.data_dir, "train")
            val = (_rows(session, validation_next, images, pooled, info_counts["validation"],
                         1, None, config.data_dir, "validation",
                         mirrored=manifest["flip_average"])
                   if validation_next is not None else (np.zeros((0, 1), np.float16),
                                                        np.zeros(0, np.int32)))
    seconds = time.time() - started
    speed = (len(rows[0]) + len(val[0])) / max(seconds, 1e-9)
    print(f"the network's features of {len(rows[0]):,} training rows "
          f"({len(rows[0]) // max(1, info_counts['train'])} views of each image) and "
          f"{len(val[0]):,} validation images: {seconds:.0f} s, {speed:.1f} img/s", flush=True)
    return Features(rows[0], rows[1], val[0], val[1], speed)


def _load_weights(session, config):
    """The frozen network's weights: the run's own checkpoint when it has one
    (the stage through the network has not begun, so they are the start's),
    else where it starts."""
    session.run(tf.compat.v1.global_variables_initializer())
    if restore_newest(session, None, config.model_dir) is None:
        warm_start(session, config.start.weights, config.start.exclude_scopes, report=False)


def _rows(session, next_batch, images, pooled, count, views, budget, data_dir, split,
          mirrored=False):
    """(features [rows, D] float16, labels [rows] int32) of `views` passes
    over the count images of the split; fewer passes when the budget says
    so after each one. mirrored: each row is the image's features then its
    mirror image's, [rows, 2D], for a validation that averages the two
    (suite.training.validation)."""
    features, labels, done, passes = [], [], 0, 0
    started = time.time()
    while done < count * views:
        try:
            batch, batch_labels, _ = session.run(next_batch)
            batches = [batch, batch[:, :, ::-1]] if mirrored else [batch]
            features.append(np.concatenate([session.run(pooled, {images: b}) for b in batches],
                                           axis=1).astype(np.float16))
        except tf.errors.OutOfRangeError:
            break
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise explain_data_error(data_dir, split, error)
        labels.append(batch_labels.astype(np.int32))
        done += len(batch)
        if budget is not None and done // count > passes:
            passes = done // count
            views = budget.feature_passes(passes, time.time() - started, views)
    rows = count * views
    return np.concatenate(features)[:rows], np.concatenate(labels)[:rows]
