"""Evaluating a model on FlowIO.py's records, or on a class-per-folder tree
converted as FlowIO.py converts it: the probabilities of every image, and
their metrics."""
import dataclasses
import os

import numpy as np
import tensorflow as tf

from suite.data.contract import LABELS_FILE, load_dataset_info
from suite.data.convert import convert, print_skipped
from suite.data.folders import find_images
from suite.data.pipeline import explain_data_error, make_dataset
from suite.evaluation.metrics import Predictions, compute_metrics, misclassified_rows
from suite.hardware.precision import session_config
from suite.model import checkpoints
from suite.model.bookkeeping import BEST_DIR
from suite.model.network import frozen_network, import_network
from suite.plumbing.errors import UserError
from suite.plumbing.names import some


@dataclasses.dataclass(frozen=True)
class Source:
    """What an evaluation reads: a split of FlowIO.py's records in data_dir,
    batch_size at a time; with image_dir, the records are that tree
    converted (convert_image_dir) and files are named by their path in it."""
    data_dir: str
    split: str
    batch_size: int
    image_dir: str = None


def choose_checkpoints(model_dir, choice):
    """--checkpoint: a prefix, 'best', 'latest', None (best/'s, else the
    newest: checkpoints.resolve_checkpoint) or 'all' (every checkpoint in
    model_dir, oldest first, then best/'s). The newest and best are chosen
    when they are loaded (checkpoints.restore_chosen), so a train.py running
    meanwhile cannot delete them in between."""
    if choice != "all":
        checkpoints.resolve_checkpoint(model_dir, choice)  # a clear error now if there is none
        return [choice]
    chosen = (checkpoints.list_checkpoints(model_dir)[::-1]
              + checkpoints.list_checkpoints(os.path.join(model_dir, BEST_DIR)))
    if not chosen:
        raise UserError(f"no checkpoint in {model_dir}: run train.py first")
    return chosen


def run_split(network, manifest, source, precision, keep):
    """Runs `network` (a frozen_network) in `precision` over the source's
    split; returns what keep(probabilities, true labels) gives of each batch,
    in order, and the file names of every record."""
    kept, filenames = [], []
    with tf.Graph().as_default():
        with tf.device("/cpu:0"):  # input on the CPU, as in training
            dataset = make_dataset(source.data_dir, source.split, manifest["image_size"],
                                   source.batch_size, training=False,
                                   preprocessing=manifest["preprocessing"])
            images, labels, names = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        probabilities = tf.nn.softmax(import_network(network, images))
        with tf.compat.v1.Session(config=session_config(False, precision)) as session:
            while True:
                try:
                    p, y, f = session.run([probabilities, labels, names])
                except tf.errors.OutOfRangeError:
                    return kept, filenames
                except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                    raise explain_data_error(source.data_dir, source.split, error)
                kept.append(keep(p, y))
                filenames.extend(os.fsdecode(name) for name in f)  # any bytes


def predict_split(manifest, model_dir, checkpoint, source, precision):
    """Probabilities, true labels and file names of every record of the
    source's split, computed in `precision` (a Precision), and the checkpoint
    they came from. It holds images x classes numbers; evaluate() does not."""
    network, checkpoint = frozen_network(manifest, model_dir, checkpoint, precision.graph_dtype)
    batches, filenames = run_split(network, manifest, source, precision, lambda p, y: (p, y))
    return (np.concatenate([p for p, _ in batches]), np.concatenate([y for _, y in batches]),
            filenames, checkpoint)


def predict_summaries(manifest, model_dir, checkpoint, source, precision):
    """The Predictions and file names of every record of the source's split,
    and the checkpoint they came from. Each batch's probabilities are reduced
    as they come, so memory is linear in images and classes, not their product."""
    network, checkpoint = frozen_network(manifest, model_dir, checkpoint, precision.graph_dtype)
    summaries, filenames = run_split(network, manifest, source, precision, Predictions.of_batch)
    return Predictions.concatenate(summaries), filenames, checkpoint


def convert_image_dir(image_dir, records_dir, manifest, model_dir, out):
    """convert() of a class-per-folder tree into records_dir, everything in
    the 'train' split; returns the skipped files, reported on `out` as
    FlowIO.py reports them.

    The class folders are checked first: labels are numbered by sorted folder
    name, so a missing or extra folder would shift every label and the
    accuracy would be silently wrong.
    """
    if not os.path.isdir(image_dir):
        raise UserError(f"--image_dir {image_dir} is not a folder: put one sub-folder "
                        f"of images per class there")
    labels = manifest["labels"]
    folders = list(find_images(image_dir)[0])
    unknown = [name for name in folders if name not in labels]
    missing = [name for name in labels if name not in folders]
    if unknown or missing:
        problems = ([f"not classes of the model: {some(unknown, 10)}"] if unknown else []) + \
                   ([f"missing: {some(missing, 10)}"] if missing else [])
        raise UserError(
            f"--image_dir {image_dir} has class folders that do not match the model in "
            f"{model_dir} ({'; '.join(problems)}); use one folder per class of "
            f"{os.path.join(model_dir, LABELS_FILE)}")
    # The model's --max_side, so the images are seen as in training.
    info = convert(image_dir, records_dir, validation_ratio=0,
                   max_side=manifest["preprocessing"].get("max_side"))
    print_skipped(info["skipped"], "metrics.json", out=out)
    if info["classes"] != labels:
        empty = [name for name in labels if name not in info["classes"]]
        raise UserError(f"--image_dir {image_dir}: class folder(s) {some(empty, 10)} "
                        f"have no usable image; the model needs all its classes")
    return info["skipped"]


def evaluate(manifest, model_dir, checkpoint, source, precision):
    """The metrics of the checkpoint on the source (a Source), and its
    misclassified files, most confident first."""
    info = load_dataset_info(source.data_dir)
    if info["classes"] != manifest["labels"]:
        raise UserError(
            f"{source.data_dir} has classes {info['classes']} but the model in {model_dir} "
            f"was trained on {manifest['labels']}; evaluate on data with the same class folders")
    predictions, filenames, checkpoint = predict_summaries(
        manifest, model_dir, checkpoint, source, precision)
    if source.image_dir is not None:
        # Records name files relative to the tree; the user needs paths to open.
        filenames = [os.path.join(source.image_dir, name) for name in filenames]
    metrics = compute_metrics(predictions, manifest["labels"])
    metrics["checkpoint"] = checkpoint
    metrics["step"] = checkpoints.checkpoint_step(checkpoint)
    metrics["weights"] = checkpoints.checkpoint_weights(checkpoint)  # raw or moving average
    metrics["precision"] = precision._asdict()
    metrics["flip_average"] = manifest.get("flip_average", False)  # network.build_network
    return metrics, misclassified_rows(predictions, filenames, manifest["labels"])
