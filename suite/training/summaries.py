"""TensorBoard summaries of a training run (tensorboard --logdir MODEL_DIR),
with a failed write (a full disk) reported as one line."""
import contextlib
import threading

import tensorflow as tf

from suite.plumbing.errors import UserError, reason


class Summaries:
    """A summary FileWriter in model_dir for the graph; write() adds scalars
    at a step. Use it as a context manager: it is closed at the end, and a
    failure to close it is reported only when nothing else went wrong first
    (the error that stopped training is the one to report, not a failing
    flush of the summaries behind it, on a full disk)."""

    def __init__(self, model_dir, graph):
        _quiet_summary_thread()
        self.model_dir = model_dir
        self.writer = tf.compat.v1.summary.FileWriter(model_dir, graph)

    def write(self, step, values):
        summary = tf.compat.v1.Summary(value=[
            tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()])
        self._written(lambda: self.writer.add_summary(summary, step))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self._written(self.writer.close)
        else:
            with contextlib.suppress(Exception):
                self.writer.close()

    def _written(self, write):
        """Runs write(); TensorBoard's writer thread reports a failed write (a
        full disk) as a RuntimeError on the next call: one line instead."""
        try:
            write()
        except (RuntimeError, OSError) as error:
            raise UserError(f"cannot write TensorBoard summaries in {self.model_dir} "
                            f"({reason(error)}): free some space, then run train.py again "
                            f"to resume from the last checkpoint")


def _quiet_summary_thread():
    """TensorBoard's writer thread dies with a traceback when a write fails (a
    full disk); the writer raises the same error again in the main thread on
    its next call, where Summaries reports it as one line. The thread's own
    traceback would only bury that line."""
    default_hook = threading.excepthook

    def hook(args):
        if args.thread is None or args.thread.name != "EventLoggerThread":
            default_hook(args)
    threading.excepthook = hook
