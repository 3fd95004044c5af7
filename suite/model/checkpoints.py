"""The checkpoints of a model directory: finding, choosing, restoring and
saving them.

    model.ckpt-STEP.* the newest checkpoints (tf.compat.v1.train.Saver, relative
                      paths); with train.py --moving_average_decay they also
                      hold the moving averages of the weights (the shadow
                      variables, NAME/ExponentialMovingAverage)
    best/             the checkpoint with the best validation accuracy so far,
                      plain variables under their own names (the averaged
                      weights when those validated better), and best.json;
                      a symbolic link to a hidden .best-STEP-XXXX folder, so
                      that the two change together (save_best)

Which checkpoint a reader takes (resolve_checkpoint, restore_chosen): best/'s
when there is one, else the newest; "--checkpoint latest" the newest.
"""
import contextlib
import glob
import os
import re
import shutil
import sys
import tempfile

import tensorflow as tf

from suite.model.bookkeeping import (BEST_DIR, MOVING_AVERAGE, RAW, load_best_record,
                                     load_validation, save_best_record)
from suite.plumbing.errors import UserError, reason

CHECKPOINT_PREFIX = "model.ckpt"
LATEST = "latest"  # --checkpoint values besides a prefix; None is the default choice
BEST = "best"
# tf.compat.v1.train.ExponentialMovingAverage's name (its default): the shadow
# variable of "resnet/conv1/weights" is "resnet/conv1/weights/ExponentialMovingAverage".
MOVING_AVERAGE_NAME = "ExponentialMovingAverage"


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
    best = load_best_record(os.path.dirname(checkpoint))
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
    best = load_best_record(folder)
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


def save_best(session, saver, model_dir, step, validation_top1, weights=RAW):
    """Saves the checkpoint as best/ with its accuracy and which weights saver
    writes (MOVING_AVERAGE: a Saver that writes the averages under the
    weights' own names); returns the record.

    The checkpoint and its best.json change together, in one rename: both
    are written into a new hidden folder (.best-STEP-XXXX), then best, a
    symbolic link in model_dir, is replaced by one to that folder, and the
    folders it no longer names are removed. A run killed at any moment leaves
    best/ naming a complete pair, the old or the new."""
    best = {"step": step, "validation_top1": float(validation_top1), "weights": weights}
    publish_best(model_dir, write_best_folder(session, saver, model_dir, best))
    return best


def write_best_folder(session, saver, model_dir, best):
    """A new hidden folder in model_dir holding saver's checkpoint and the
    record best (best.json); returns its path."""
    try:
        folder = tempfile.mkdtemp(prefix=f".{BEST_DIR}-{best['step']}-", dir=model_dir)
        os.chmod(folder, 0o755)  # mkdtemp's 0700 would hide best/ from other readers
    except OSError as error:
        raise UserError(f"cannot write to {model_dir} ({reason(error)}): free some space or "
                        f"fix its permissions, then run train.py again to resume")
    saver.set_last_checkpoints_with_time([])  # the Saver must not delete the old best/'s files
    save_checkpoint(session, saver, folder, best["step"])
    save_best_record(folder, best)
    return folder


def publish_best(model_dir, folder):
    """Makes model_dir/best name folder (one rename of a symbolic link), then
    removes the best folders it named before. A best/ that is a folder
    (written by an earlier version) is first renamed out of the way."""
    link = os.path.join(model_dir, BEST_DIR)
    new_link = os.path.join(model_dir, f".{BEST_DIR}.link-{os.getpid()}")
    try:
        if os.path.isdir(link) and not os.path.islink(link):
            os.rename(link, tempfile.mkdtemp(prefix=f".{BEST_DIR}-old-", dir=model_dir))
        with contextlib.suppress(FileNotFoundError):
            os.remove(new_link)
        os.symlink(os.path.basename(folder), new_link)
        os.replace(new_link, link)
    except OSError as error:
        raise UserError(f"cannot update {link} ({reason(error)}): fix the permissions of "
                        f"{model_dir}, then run train.py again to resume")
    for name in os.listdir(model_dir):
        stale = os.path.join(model_dir, name)
        if name.startswith(f".{BEST_DIR}.link-") and os.path.islink(stale):
            with contextlib.suppress(OSError):
                os.remove(stale)  # a link left by a killed run (removing never follows it)
        elif name.startswith(f".{BEST_DIR}-") and name != os.path.basename(folder) \
                and os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)  # only folders made here, never via a link
