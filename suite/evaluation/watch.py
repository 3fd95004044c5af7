"""Evaluation.py --watch: each new checkpoint evaluated as train.py writes it,
as TF-slim's evaluation loop does."""
import json
import os
import sys
import time

import tensorflow as tf

from suite.evaluation.evaluate import evaluate
from suite.evaluation.metrics import summary_line
from suite.evaluation.report import output_files, write_outputs
from suite.model.checkpoints import LATEST, list_checkpoints
from suite.model.manifest import load_manifest

WATCH_POLL_SECS = 2


def checkpoint_identity(checkpoint):
    """What tells one checkpoint from another: its path and its .index
    file's inode and modification time (None once it is gone).

    Not the step alone: a model_dir emptied and trained again writes
    model.ckpt-10 anew, at a step below the last one evaluated, often under
    the same name and even the same (reused) inode; its .index is a new file
    with a new modification time.
    """
    try:
        stat = os.stat(checkpoint + ".index")
    except OSError:
        return checkpoint, None
    return checkpoint, stat.st_ino, stat.st_mtime_ns


def watch(model_dir, source, precision, output_dir, timeout, as_json=False):
    """Evaluates the newest checkpoint of model_dir on source (a Source)
    whenever it is not the one last evaluated (by checkpoint_identity;
    tf.train.checkpoints_iterator's rule: one that appears and is replaced
    between two looks is skipped), until none comes for `timeout` seconds.
    model.json may appear only with the first checkpoint: the watch can
    start before train.py does, and is read again with each checkpoint, for
    a model_dir trained again. One line per checkpoint (one JSON object
    with as_json), the files of the newest in output_dir, and TensorBoard
    summaries there."""
    out = sys.stderr if as_json else sys.stdout  # as_json keeps stdout JSON lines
    print(f"watching {model_dir} for new checkpoints (stopping after {timeout:g} s without "
          f"one)", file=out, flush=True)
    done, writer = set(), None  # the identities of the last evaluation
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = list_checkpoints(model_dir)
            newest = checkpoint_identity(found[0]) if found else None
            if newest is not None and newest not in done:
                if writer is None:
                    with tf.Graph().as_default():  # the TF1 writer refuses eager mode
                        writer = tf.compat.v1.summary.FileWriter(output_dir)
                evaluated = _evaluate_newest(load_manifest(model_dir), model_dir, source,
                                             precision, output_dir, as_json, writer)
                # Both: the one listed may be unreadable (passed over for an
                # older one, with a warning), and should not be tried again.
                done = {newest, checkpoint_identity(evaluated)}
                deadline = time.monotonic() + timeout
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"no new checkpoint in {model_dir} for {timeout:g} s; stopped watching",
                      file=out)
                return
            time.sleep(min(WATCH_POLL_SECS, remaining))
    except KeyboardInterrupt:
        print("stopped watching", file=out)
    finally:
        if writer is not None:
            writer.close()


def _evaluate_newest(manifest, model_dir, source, precision, output_dir, as_json, writer):
    """Evaluates the newest checkpoint, says so, writes its files and
    summaries; returns its path."""
    # The newest when it is loaded, even if train.py has deleted the one just
    # listed (it keeps only the newest few).
    metrics, misclassified = evaluate(manifest, model_dir, LATEST, source, precision)
    metrics["files"] = output_files(output_dir)
    if as_json:
        print(json.dumps(dict(metrics, misclassified=misclassified), ensure_ascii=False),
              flush=True)
    else:
        print(f"step {metrics['step']}: {summary_line(metrics)}  ({metrics['checkpoint']})",
              flush=True)
    write_outputs(metrics, misclassified, manifest["labels"], metrics["files"])
    writer.add_summary(tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=f"{source.split}_{key}", simple_value=metrics[key])
        for key in ("top1", "top5", "macro_recall", "loss") if key in metrics]),
        metrics["step"])
    writer.flush()
    return metrics["checkpoint"]
