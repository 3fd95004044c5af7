"""The model directory (models/ by default): everything train.py writes there
and Evaluation.py and useModel.py read back, in one place.

    model.json        the manifest: network, image size, preprocessing, data
                      fingerprint, TensorFlow version, the precision it was
                      trained in, training options
    labels.txt        the label order ("index:name"), as FlowIO.py wrote it
    model.ckpt-STEP.* the newest checkpoints (tf.compat.v1.train.Saver, relative paths)
    best/             the checkpoint with the best validation accuracy so far,
                      and best.json (its step and accuracy)
    events.*          TensorBoard summaries

As nanoGPT rebuilds its model from the config stored beside the weights,
build_network() rebuilds ours from model.json: every reader calls it
(prediction through frozen_network()), so a model directory needs no flags
to be used.
"""
import contextlib
import json
import os
import re
import sys

import tensorflow as tf

import FlowIO
import resnet
from cli import UserError

MANIFEST_FILE = "model.json"
CHECKPOINT_PREFIX = "model.ckpt"
BEST_DIR = "best"
BEST_FILE = "best.json"


# ---------------------------------------------------------------------------
# The manifest and the labels
# ---------------------------------------------------------------------------
def load_manifest(model_dir):
    """model.json plus "labels" read from labels.txt; a clear error if absent."""
    path = os.path.join(model_dir, MANIFEST_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: train a model into {model_dir} with "
                        f"'python train.py --model_dir {model_dir}' first")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["labels"] = FlowIO.read_labels(os.path.join(model_dir, FlowIO.LABELS_FILE))
    return manifest


def write_manifest(model_dir, manifest, labels):
    """Writes model.json (atomically) and labels.txt into model_dir."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, MANIFEST_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    os.replace(tmp, os.path.join(model_dir, MANIFEST_FILE))
    FlowIO.write_labels(model_dir, labels)


def build_network(images, manifest, is_train, **options):
    """The logits of the network model.json describes, on preprocessed images.

    options go to resnet.build (weight_decay, compute_dtype) and may not
    change the network's shape: that comes from the manifest alone.
    """
    return resnet.build(images, manifest["model"], len(manifest["labels"]), is_train,
                        shortcut=manifest.get("shortcut", "A"), **options)


# ---------------------------------------------------------------------------
# Prediction: the network with its weights as constants
# ---------------------------------------------------------------------------
def frozen_network(manifest, checkpoint, compute_dtype=tf.float32):
    """The eval-mode network with the checkpoint's weights in it as constants:
    a GraphDef from preprocessed images ("images:0", float32 [N, size, size,
    3]) to logits ("logits:0", float32), for import_network().

    Prediction reads its weights once, so they may be constants: TensorFlow
    then folds each batch norm into its conv, and under a lower precision
    converts the weights once instead of at every batch. On a 2-core AVX-512
    CPU that made fp32 prediction 1.1-2.3x and bf16 prediction 1.5-2.5x as
    fast as the network with variables (BENCHMARKS.md, "Precision"); without
    it, bf16 was slower than fp32 at small batches. The graph is built from
    code and only the checkpoint's variables are read, as in restore().
    """
    size = manifest["image_size"]
    graph = tf.Graph()
    with graph.as_default(), quiet_tf1_notices():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="images")
        logits = build_network(images, manifest, is_train=False, compute_dtype=compute_dtype)
        tf.identity(logits, name="logits")
        with tf.compat.v1.Session(graph=graph) as session:
            restore(session, checkpoint)
            return tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["logits"])


def import_network(network, images):
    """The logits of a frozen_network() GraphDef on `images`, in the current graph."""
    return tf.graph_util.import_graph_def(network, input_map={"images:0": images},
                                          return_elements=["logits:0"], name="network")[0]


@contextlib.contextmanager
def quiet_tf1_notices():
    """Freezing and exporting use TF1 APIs on purpose (convert_variables_to_constants,
    the SavedModel Builder): their deprecation notices would bury the lines
    that matter."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------
def list_checkpoints(folder):
    """Checkpoint prefixes in folder, newest step first.

    Found by their .index files rather than through the 'checkpoint' state
    file, which a kill can garble (TensorFlow's latest_checkpoint then
    returns None and training would silently restart from step 0).
    """
    if not os.path.isdir(folder):
        return []
    steps = []
    for name in os.listdir(folder):
        match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"-(\d+)\.index", name)
        if match:
            steps.append(int(match.group(1)))
    return [os.path.join(folder, f"{CHECKPOINT_PREFIX}-{step}")
            for step in sorted(steps, reverse=True)]


def checkpoint_step(path):
    return int(path.rsplit("-", 1)[1])


def resolve_checkpoint(model_dir, checkpoint=None):
    """None -> the newest checkpoint in model_dir, "best" -> the one in best/,
    anything else is taken as a checkpoint prefix."""
    if checkpoint in (None, "best"):
        folder = os.path.join(model_dir, BEST_DIR) if checkpoint else model_dir
        found = list_checkpoints(folder)
        if not found:
            raise UserError(f"no checkpoint in {folder}: run train.py first")
        return found[0]
    if not os.path.exists(checkpoint + ".index"):
        raise UserError(f"--checkpoint {checkpoint}: no {checkpoint}.index; give a "
                        f"prefix such as {model_dir}/{CHECKPOINT_PREFIX}-1000 or 'best'")
    return checkpoint


def restore(session, checkpoint):
    """Restores the variables of the graph in session from checkpoint.

    Only variables are read: the graph was built from code (build_network),
    never imported from a file, which could hold any program.
    """
    tf.compat.v1.train.Saver().restore(session, checkpoint)


def restore_newest(session, saver, folder):
    """Restores the newest readable checkpoint in folder; returns its path or None.

    An unreadable checkpoint is skipped with a warning naming it; if there are
    checkpoints but none can be read, that is an error, never a fresh start.
    """
    candidates = list_checkpoints(folder)
    for path in candidates:
        try:
            saver.restore(session, path)
            return path
        except (tf.errors.OpError, ValueError) as error:
            reason = getattr(error, "message", str(error)).splitlines()[0]
            print(f"warning: checkpoint {path} is unreadable ({reason}); "
                  f"trying the previous one", file=sys.stderr)
    if candidates:
        raise UserError(f"no checkpoint in {folder} can be read; move the folder "
                        f"away to start afresh")
    return None


def save_checkpoint(session, saver, folder, step):
    """Saves a checkpoint; a full disk or a read-only folder is a clear error.

    The Saver writes to temporary files and renames them when complete, and
    only then drops the oldest checkpoint, so a failed or killed save leaves
    the previous checkpoints intact.
    """
    try:
        return saver.save(session, os.path.join(folder, CHECKPOINT_PREFIX), global_step=step,
                          write_meta_graph=False)
    except (tf.errors.OpError, OSError) as error:
        reason = getattr(error, "message", None) or getattr(error, "strerror", None) or error
        raise UserError(f"cannot save a checkpoint in {folder} "
                        f"({str(reason).splitlines()[0]}): free some space or fix its "
                        f"permissions, then run train.py again to resume from the "
                        f"previous checkpoint")


# ---------------------------------------------------------------------------
# best/
# ---------------------------------------------------------------------------
def load_best(model_dir):
    """best/best.json: the step and validation top-1 of the best checkpoint."""
    path = os.path.join(model_dir, BEST_DIR, BEST_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"step": None, "validation_top1": -1.0}


def save_best(session, saver, model_dir, step, validation_top1):
    """Saves the checkpoint into best/ with its accuracy; returns the record."""
    best = {"step": step, "validation_top1": float(validation_top1)}
    best_dir = os.path.join(model_dir, BEST_DIR)
    save_checkpoint(session, saver, best_dir, step)
    with open(os.path.join(best_dir, BEST_FILE), "w", encoding="utf-8") as f:
        json.dump(best, f)
    return best
