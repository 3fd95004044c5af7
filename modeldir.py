"""The model directory (models/ by default): everything train.py writes there
and Evaluation.py and useModel.py read back, in one place.

    model.json        the manifest: network, image size, preprocessing (the
                      pixel normalisation every reader applies), flip_average
                      (predictions average each image with its mirror
                      image: build_network), the TF-slim
                      weights it started from ("pretrained"), data
                      fingerprint, TensorFlow version, the precision it was
                      trained in, training options
    labels.txt        the label order ("index:name"), as FlowIO.py wrote it
    model.ckpt-STEP.* the newest checkpoints (tf.compat.v1.train.Saver, relative paths);
                      with train.py --moving_average_decay they also hold the
                      moving averages of the weights (the shadow variables,
                      NAME/ExponentialMovingAverage)
    best/             the checkpoint with the best validation accuracy so far,
                      plain variables under their own names (the averaged
                      weights when those validated better), and best.json
                      (its step, accuracy and which weights)
    validation.json   the latest validation: its top-1 for the raw and the
                      averaged weights and which were better (readers of a
                      regular checkpoint take those), and, when early
                      stopping ended the run, where and why
    events.*          TensorBoard summaries

Which checkpoint a reader takes (resolve_checkpoint, restore_chosen): best/'s
when there is one, else the newest; "--checkpoint latest" the newest.

As nanoGPT rebuilds its model from the config stored beside the weights,
build_network() rebuilds ours from model.json: every reader calls it,
directly or through frozen_network(), so a model directory needs no flags to
be used.
"""
import contextlib
import fcntl
import glob
import json
import logging
import math
import os
import re
import sys

import tensorflow as tf

import FlowIO
import resnet
from cli import UserError, reason

MANIFEST_FILE = "model.json"
CHECKPOINT_PREFIX = "model.ckpt"
BEST_DIR = "best"
BEST_FILE = "best.json"
VALIDATION_FILE = "validation.json"
LOCK_FILE = ".train.lock"
LATEST = "latest"  # --checkpoint values besides a prefix; None is the default choice
BEST = "best"
# tf.compat.v1.train.ExponentialMovingAverage's name (its default): the shadow
# variable of "resnet/conv1/weights" is "resnet/conv1/weights/ExponentialMovingAverage".
MOVING_AVERAGE_NAME = "ExponentialMovingAverage"
RAW, MOVING_AVERAGE = "raw", "moving average"  # which weights (best.json, validation.json)


# ---------------------------------------------------------------------------
# The manifest and the labels
# ---------------------------------------------------------------------------
def load_manifest(model_dir):
    """model.json plus "labels" read from labels.txt, checked: a missing,
    edited or mismatched file is one line naming it, never a traceback or a
    model built wrong."""
    path = os.path.join(model_dir, MANIFEST_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: train a model into {model_dir} with "
                        f"'python train.py --model_dir {model_dir}' first")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({reason(error)}): restore it from a copy, "
                        f"or train again into a new --model_dir")
    _check_manifest(manifest, path)
    # Written by every train.py; without it (a hand-made model.json), the
    # defaults of FlowIO.normalize and no --max_side.
    manifest.setdefault("preprocessing", {})
    labels_path = os.path.join(model_dir, FlowIO.LABELS_FILE)
    if not os.path.exists(labels_path):
        raise UserError(f"{labels_path} not found: copy the data's labels.txt (FlowIO.py's "
                        f"--output_dir) into {model_dir}")
    manifest["labels"] = FlowIO.read_labels(labels_path)
    if len(manifest["labels"]) != manifest["num_classes"]:
        raise UserError(f"{labels_path} names {len(manifest['labels'])} classes but {path} "
                        f"says {manifest['num_classes']}: copy the data's labels.txt into "
                        f"{model_dir}")
    return manifest


def _check_manifest(manifest, path):
    """The keys build_network and the readers rely on, with sane values."""
    problem = None
    if not isinstance(manifest, dict):
        problem = "it is not a JSON object"
    elif manifest.get("model") not in resnet.ResNet_demo:
        problem = (f"model {manifest.get('model')!r} is not one of "
                   f"{', '.join(resnet.ResNet_demo)}")
    elif manifest.get("shortcut", "A") not in resnet.SHORTCUTS:
        problem = f"shortcut {manifest.get('shortcut')!r} is not one of {resnet.SHORTCUTS}"
    elif manifest.get("stem", "imagenet") not in resnet.STEMS:
        problem = f"stem {manifest.get('stem')!r} is not one of {resnet.STEMS}"
    elif type(manifest.get("flip_average", False)) is not bool:
        problem = f"flip_average is {manifest.get('flip_average')!r}, not true or false"
    else:
        for key, low, high in (("image_size", 16, 4096), ("num_classes", 2, 10**6)):
            value = manifest.get(key)
            if type(value) is not int or not low <= value <= high:
                problem = f"{key} is {value!r}, not an integer in {low}..{high}"
                break
        problem = problem or _preprocessing_problem(manifest.get("preprocessing", {}))
    if problem:
        raise UserError(f"{path} is not a model description train.py wrote ({problem}): "
                        f"restore it from a copy, or train again into a new --model_dir")


def _preprocessing_problem(preprocessing):
    """What is wrong with a manifest's "preprocessing", or None: its mean and
    standard deviation (FlowIO.normalize's) must be three finite numbers, the
    deviations positive, or every input would be silently wrong (inf, NaN)."""
    if not isinstance(preprocessing, dict):
        return "preprocessing is not a JSON object"
    for key, low in (("mean_rgb", -math.inf), ("std_rgb", 0)):
        value = preprocessing.get(key, [1, 1, 1])  # absent: FlowIO's default
        if not (isinstance(value, list) and len(value) == 3 and all(
                type(v) in (int, float) and math.isfinite(v) and v > low for v in value)):
            return (f"preprocessing {key} is {value!r}, not three finite numbers"
                    + (" above 0" if low == 0 else ""))
    return None


def write_manifest(model_dir, manifest, labels):
    """Writes model.json (atomically) and labels.txt into model_dir."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        _replace_json(os.path.join(model_dir, MANIFEST_FILE), manifest, indent=1,
                      ensure_ascii=False)
        FlowIO.write_labels(model_dir, labels)
    except OSError as error:
        raise UserError(f"cannot write to --model_dir {model_dir} ({reason(error)}): free some "
                        f"space or fix its permissions")


def build_network(images, manifest, is_train, **options):
    """The logits of the network model.json describes, on preprocessed images.

    options go to resnet.build (weight_decay, compute_dtype) and may not
    change the network's shape: that comes from the manifest alone.

    With "flip_average" (train.py --flip_average), the eval-mode network
    averages each image's class probabilities with its mirror image's
    (left-right flip, as the training augmentation flips): the logits are
    the log of that mean, so softmax gives the mean back and argmax its best
    class. Being here, it is in validation, Evaluation.py, useModel.py and
    every export alike. It costs twice the computation per image; on three
    Fashion-MNIST models it added 0.08-0.34 points of validation top-1
    (BENCHMARKS.md, "Accuracy").
    """
    def network(inputs):
        return resnet.build(inputs, manifest["model"], len(manifest["labels"]), is_train,
                            shortcut=manifest.get("shortcut", "A"),
                            stem_kind=manifest.get("stem", "imagenet"), **options)

    if is_train or not manifest.get("flip_average", False):
        return network(images)
    # One pass over the images and their mirror images (a batch twice as
    # long): eval-mode batch norm treats each image on its own.
    plain, mirrored = tf.split(network(tf.concat([images, tf.reverse(images, axis=[2])], 0)), 2)
    log_probabilities = tf.stack([tf.nn.log_softmax(plain), tf.nn.log_softmax(mirrored)])
    # log((p + q) / 2), computed without leaving log space (no log(0) = -inf)
    return tf.reduce_logsumexp(log_probabilities, axis=0) - math.log(2.0)


# ---------------------------------------------------------------------------
# Prediction: the network with its weights as constants
# ---------------------------------------------------------------------------
def frozen_network(manifest, model_dir, checkpoint=None, compute_dtype=tf.float32):
    """The eval-mode network with the weights of --checkpoint (as
    restore_chosen takes it) in it as constants: (a GraphDef from preprocessed
    images ("images:0", float32 [N, size, size, 3]) to logits ("logits:0",
    float32), for import_network(); the checkpoint's path).

    Prediction reads its weights once, so they may be constants: TensorFlow
    then folds each batch norm into its conv, and under a lower precision
    converts the weights once instead of at every batch. On a 2-core AVX-512
    CPU that made fp32 prediction 1.1-2.3x and bf16 prediction 1.5-2.5x as
    fast as the network with variables (BENCHMARKS.md, "Precision"); without
    it, bf16 was slower than fp32 at small batches. The graph is built from
    code and only the checkpoint's variables are read, as in restore().

    Why constants are faster: oneDNN keeps a conv's filter in its own layout
    only when the filter is a Const node; from a variable it lays the filter
    out again at every run (single images of ResNet-50 at 224 px: about 1.2x
    the time; batches of 32: about the same). The price is memory: TensorFlow
    holds constants several times over (the graph's copy, the session's, its
    optimiser's passes, the kernels', oneDNN's re-laid-out filters), so
    ResNet-50 at 224 px peaks at about 1.9 GB where restored variables take
    0.7 GB (BENCHMARKS.md, "Serving runtimes").
    """
    size = manifest["image_size"]
    graph = tf.Graph()
    with graph.as_default(), quiet_tf1_notices():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="images")
        logits = build_network(images, manifest, is_train=False, compute_dtype=compute_dtype)
        tf.identity(logits, name="logits")
        with tf.compat.v1.Session(graph=graph) as session:
            checkpoint = restore_chosen(session, model_dir, checkpoint)
            return tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["logits"]), checkpoint


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
    logger.setLevel(max(level, logging.ERROR))  # never louder than cli made it
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


def average_name(name):
    """The checkpoint name of the moving average of variable `name` (its
    shadow variable, written by train.py --moving_average_decay)."""
    return f"{name}/{MOVING_AVERAGE_NAME}"


def is_average(name):
    return name.endswith("/" + MOVING_AVERAGE_NAME)


def chosen_folder(model_dir, checkpoint=None):
    """The folder whose newest checkpoint --checkpoint means (None for a
    prefix): best/ for "best", model_dir for "latest", and by default best/
    when it holds a checkpoint (the weights that validated best, not merely
    the last ones: a run that overfits or ends on a bad epoch), else model_dir."""
    best_dir = os.path.join(model_dir, BEST_DIR)
    if checkpoint == BEST:
        return best_dir
    if checkpoint == LATEST:
        return model_dir
    if checkpoint is None:
        return best_dir if list_checkpoints(best_dir) else model_dir
    return None


def resolve_checkpoint(model_dir, checkpoint=None):
    """The checkpoint --checkpoint chooses: None (the default) -> best/'s when
    there is one, else the newest in model_dir; "best" -> best/'s; "latest"
    -> the newest; anything else is taken as a checkpoint prefix."""
    folder = chosen_folder(model_dir, checkpoint)
    if folder is not None:
        found = list_checkpoints(folder)
        if not found:
            raise UserError(f"no checkpoint in {folder}: run train.py first")
        return found[0]
    if not os.path.exists(checkpoint + ".index"):
        raise UserError(f"--checkpoint {checkpoint}: no {checkpoint}.index; give a prefix "
                        f"such as {model_dir}/{CHECKPOINT_PREFIX}-1000, 'best' or 'latest'")
    return checkpoint


def reads_moving_averages(checkpoint, stored=None):
    """Whether a reader restores checkpoint's weights from their moving
    averages: when it holds them and the latest validation of its folder
    (validation.json) found them better than the raw weights. best/ never
    needs it: train.py saves the better weights there under their own names.
    stored: the checkpoint's variable names, if already read."""
    if load_validation(os.path.dirname(checkpoint)).get("weights") != MOVING_AVERAGE:
        return False
    if stored is None:
        try:
            stored = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError):
            return False  # unreadable: restoring it says so
    return any(is_average(name) for name in stored)


def checkpoint_weights(checkpoint):
    """Which weights a reader of checkpoint gets: MOVING_AVERAGE or RAW."""
    best = _read_json(os.path.join(os.path.dirname(checkpoint), BEST_FILE), None)
    if best is not None:  # best/: plain variables, whichever weights they are
        return best.get("weights", RAW)
    return MOVING_AVERAGE if reads_moving_averages(checkpoint) else RAW


def describe_checkpoint(model_dir, checkpoint=None):
    """The line a reader prints first: the checkpoint --checkpoint chooses,
    why, which weights, and how to take the other, e.g. "using
    models/best/model.ckpt-1200 (best validation top-1 0.8730 at step 1200;
    --checkpoint latest for the newest)"."""
    path = resolve_checkpoint(model_dir, checkpoint)
    folder, best_dir = os.path.dirname(path), os.path.join(model_dir, BEST_DIR)
    best = _read_json(os.path.join(folder, BEST_FILE), None)
    hint = None
    if best is not None or (os.path.isdir(best_dir) and os.path.samefile(folder, best_dir)):
        why = ("best validation" if best is None else
               f"best validation top-1 {best['validation_top1']:.4f} at step {best['step']}")
        if best and best.get("weights") == MOVING_AVERAGE:
            why += ", by the moving averages of the weights"
        hint = "--checkpoint latest for the newest"
    elif checkpoint in (None, LATEST):
        why = "the newest"
        if checkpoint is None:
            hint = "no best/ yet"
        elif list_checkpoints(best_dir):
            hint = "--checkpoint best for the best validated"
    else:
        why = "as given"
    if reads_moving_averages(path):
        step = load_validation(folder).get("step")
        why += (f", as the moving averages of its weights (better than the raw ones at the "
                f"latest validation, step {step})")
    return f"using {path} ({why}{'; ' + hint if hint else ''})"


def restore(session, checkpoint, saver=None):
    """Restores the variables of the graph in session from checkpoint.

    Only variables are read: the graph was built from code (build_network),
    never imported from a file, which could hold any program. The shapes are
    compared first, because restoring into resource variables does not check
    them: another model's checkpoint (another class count, say) would load
    without an error and give a silently wrong network.

    Without a saver (a reader: Evaluation.py, useModel.py), each weight is
    read from its moving average when reads_moving_averages says so.
    """
    stored = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    variables = {v.op.name: v for v in
                 session.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)}
    sources = {name: name for name in variables}  # graph name -> name in the checkpoint
    if saver is None and reads_moving_averages(checkpoint, stored):
        sources = {name: average_name(name) if average_name(name) in stored else name
                   for name in variables}
        saver = tf.compat.v1.train.Saver({sources[name]: variables[name] for name in variables})
    for name, variable in variables.items():
        source, shape = sources[name], variable.shape.as_list()
        if source in stored and stored[source] != shape:
            raise ValueError(f"{source} is {stored[source]} there but {shape} in this model")
    (saver or tf.compat.v1.train.Saver()).restore(session, checkpoint)


def restore_chosen(session, model_dir, checkpoint=None):
    """Restores --checkpoint for a reader (Evaluation.py, useModel.py); returns its path.

    None (best/'s, else the newest), "best" and "latest" take the newest
    readable checkpoint of their folder (chosen_folder), so one that train.py
    deletes (it keeps only the newest few, and one best) between choosing and
    loading, or one that is not this model's, is passed over with a warning.
    A checkpoint named by its prefix must load, or it is one line saying why.
    """
    folder = chosen_folder(model_dir, checkpoint)
    if folder is None:
        path = resolve_checkpoint(model_dir, checkpoint)
        try:
            restore(session, path)
        except (tf.errors.OpError, ValueError) as error:
            raise UserError(f"--checkpoint {path} cannot be loaded into the model of "
                            f"{model_dir} ({reason(error)}): choose one of its own checkpoints")
        return path
    resolve_checkpoint(model_dir, checkpoint)  # a clear error when there is none
    return restore_newest(session, None, folder)


def restore_newest(session, saver, folder):
    """Restores the newest readable checkpoint in folder with saver (None: as
    a reader, see restore); returns its path or None.

    An unreadable checkpoint -- damaged, or another model's (another class
    count, say) -- is skipped with a warning naming it; if there are
    checkpoints but none can be read, that is an error, never a fresh start.
    One that disappears meanwhile (a running train.py keeps only the newest
    few) is no error: the folder is listed again and a newer one taken.
    """
    tried = set()
    for _ in range(10):  # a bound, though each new listing holds newer checkpoints
        candidates = [path for path in list_checkpoints(folder) if path not in tried]
        if not candidates:
            break
        for path in candidates:
            tried.add(path)
            try:
                restore(session, path, saver)
                return path
            except (tf.errors.OpError, ValueError) as error:
                if not os.path.exists(path + ".index"):
                    break  # deleted while we read it: list the folder again
                print(f"warning: checkpoint {path} is unreadable or not this model's "
                      f"({reason(error)}); trying the previous one", file=sys.stderr)
    if tried:
        raise UserError(f"no checkpoint in {folder} can be read; move the folder "
                        f"away to start afresh")
    return None


def save_checkpoint(session, saver, folder, step):
    """Saves a checkpoint; a full disk or a read-only folder is a clear error.

    The Saver writes to temporary files and renames them when complete, and
    only then drops the oldest checkpoint, so a failed or killed save leaves
    the previous checkpoints intact; what a failed save left behind is removed.
    """
    prefix = os.path.join(folder, CHECKPOINT_PREFIX)
    try:
        return saver.save(session, prefix, global_step=step, write_meta_graph=False)
    except (tf.errors.OpError, OSError) as error:
        for leftover in glob.glob(f"{glob.escape(prefix)}-{step}*tempstate*"):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        raise UserError(f"cannot save a checkpoint in {folder} ({reason(error)}): free some "
                        f"space or fix its permissions, then run train.py again to resume "
                        f"from the previous checkpoint")


@contextlib.contextmanager
def writer_lock(model_dir):
    """Held while train.py writes into model_dir: a second train.py on the
    same folder is refused instead of interleaving its checkpoints with the
    first's. An OS lock (flock), so it dies with its process: a killed run
    leaves no stale lock behind."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        lock = open(os.path.join(model_dir, LOCK_FILE), "a+")
    except OSError as error:
        raise UserError(f"cannot write to --model_dir {model_dir} ({reason(error)}): "
                        f"fix its permissions or choose another folder")
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(f"{model_dir} is being trained by {holder}: wait for it to "
                            f"finish, or train into another --model_dir")
        lock.seek(0)
        lock.truncate()
        lock.write(f"train.py (pid {os.getpid()})")
        lock.flush()
        yield


# ---------------------------------------------------------------------------
# best/
# ---------------------------------------------------------------------------
def load_best(model_dir):
    """best/best.json: the step, validation top-1 and weights of the best checkpoint."""
    return _read_json(os.path.join(model_dir, BEST_DIR, BEST_FILE),
                      {"step": None, "validation_top1": -1.0, "weights": RAW})


def save_best(session, saver, model_dir, step, validation_top1, weights=RAW):
    """Saves the checkpoint into best/ with its accuracy and which weights
    saver writes (MOVING_AVERAGE: a Saver that writes the averages under the
    weights' own names); returns the record. best/ keeps this checkpoint
    only: another Saver (the other weights', or an earlier run's) wrote the
    previous one, and a Saver deletes only its own."""
    best = {"step": step, "validation_top1": float(validation_top1), "weights": weights}
    best_dir = os.path.join(model_dir, BEST_DIR)
    path = save_checkpoint(session, saver, best_dir, step)
    for older in list_checkpoints(best_dir):
        if older != path:
            for name in glob.glob(glob.escape(older) + ".*"):
                with contextlib.suppress(OSError):
                    os.remove(name)
    _write_json(os.path.join(best_dir, BEST_FILE), best)
    return best


# ---------------------------------------------------------------------------
# validation.json: the latest validation, and an early stop
# ---------------------------------------------------------------------------
def load_validation(folder):
    """validation.json in folder: {"step", "top1", "moving_average_top1" (with
    --moving_average_decay), "weights" (the better: RAW or MOVING_AVERAGE),
    "stopped_early" (when early stopping ended the run: its "step",
    "best_step", "patience", "epochs", "total_steps")}; {} before any."""
    return _read_json(os.path.join(folder, VALIDATION_FILE), {})


def save_validation(model_dir, record):
    _write_json(os.path.join(model_dir, VALIDATION_FILE), record)


def _read_json(path, default):
    """A JSON file train.py keeps in the model directory; default when absent."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({reason(error)}): delete it; train.py "
                        f"writes it again at its next validation")


def _replace_json(path, record, **dump_options):
    """Writes record to path atomically (a kill never leaves half a file);
    raises OSError."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f, **dump_options)
    os.replace(path + ".tmp", path)


def _write_json(path, record):
    """_replace_json for train.py's bookkeeping files, failing in one line."""
    try:
        _replace_json(path, record)
    except OSError as error:
        raise UserError(f"cannot write {path} ({reason(error)}): free some space or fix "
                        f"its permissions, then run train.py again to resume")
