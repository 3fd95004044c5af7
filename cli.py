"""What every script shares: TensorFlow's environment, set before TensorFlow
loads; a command line whose every number is checked when it is parsed; and
errors a user can fix, printed as one line.

Each script starts with

    import cli
    if __name__ == "__main__":
        cli.configure_environment(verbose="--verbose" in sys.argv)

before it imports TensorFlow, so the environment is set in this one named
function, not as a side effect of which module happens to be imported first.
"""
import argparse
import contextlib
import math
import os
import sys


def configure_environment(verbose=False):
    """Sets TensorFlow's environment and loads it; call before importing it.

    TF_ENABLE_ONEDNN_OPTS=1: oneDNN is off by default on AMD CPUs with AVX2
    only, and without it backprop through convs on small feature maps is
    pathologically slow (6.7x at 32 px on such a CPU).
    Unless verbose, TensorFlow loads with its C++ log lines silenced: without
    a GPU every run would otherwise start with "Could not find cuda drivers",
    "oneDNN custom operations are on" and an "E0000 ... failed call to cuInit"
    line that looks like an error and is not one. Those lines are written
    while TensorFlow loads and probes for devices, before any of its log
    settings apply, so both happen here with stderr pointed at /dev/null; the
    scripts' own messages come later. A setting the user made in the
    environment wins.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_silenced():
        import tensorflow as tf
        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here
    # TensorFlow's Python logger: deprecation notices of the TF1 APIs we use,
    # and errors the scripts catch and report in their own words.
    tf.get_logger().setLevel("CRITICAL")


@contextlib.contextmanager
def _stderr_silenced():
    """Points file descriptor 2 (C++ code writes there) at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class UserError(Exception):
    """A problem the user can fix: printed as one line, never as a traceback."""


def run_main(main):
    """Runs a script's main(): a UserError becomes 'error: ...' and exit code 2.

    When the reader of stdout goes away (`python useModel.py ... | head`),
    the script stops quietly with exit code 1, as Python's documentation
    recommends ("Note on SIGPIPE"), instead of a BrokenPipeError traceback.
    """
    try:
        main()
        sys.stdout.flush()  # here, not at exit, where a broken pipe cannot be caught
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # What is still buffered can go nowhere: point stdout at /dev/null so
        # that the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a wrong option reported as one line (exit code 2), like
    every other error of the suite, and a --verbose flag on every script."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true",
                          help="also show TensorFlow's own log lines (start-up, devices)")

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


# Types for argparse: each checks its range when the command line is parsed,
# so a wrong number is one line before anything starts, not a traceback (or a
# hang) later. NaN and infinities are never a valid setting.
def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _checked(kind, test, requirement):
    def parse(text):
        value = _number(text, kind)
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text} must be {requirement}")
        return value
    parse.__name__ = f"{kind.__name__} {requirement}"  # shown in argparse's messages
    return parse


positive_int = _checked(int, lambda v: v > 0, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "0 or more")
positive_float = _checked(float, lambda v: v > 0, "positive")
non_negative_float = _checked(float, lambda v: v >= 0, "0 or more")
probability = _checked(float, lambda v: 0 <= v <= 1, "between 0 and 1")
below_one = _checked(float, lambda v: 0 <= v < 1, "at least 0 and below 1")


def int_in_range(low, high):
    """An integer type for argparse accepting low..high."""
    return _checked(int, lambda v: low <= v <= high, f"between {low} and {high}")


def reason(error):
    """The line of an exception that says what went wrong, for a one-line message.

    TensorFlow's graph errors start with "Graph execution error:" and the
    node's Python stack; the real reason (e.g. ".../model.ckpt-5.data...;
    No space left on device") is the first line after that noise.
    """
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    text = str(text).split("Original error:")[-1]  # the Saver wraps the error it hit
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Hint:")
    lines = [line.strip() for line in str(text).splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    line = (useful or lines or [type(error).__name__])[0]
    # "<path>; No space left on device": the cause is what follows the path.
    return line.rsplit("; ", 1)[-1] if "; " in line else line
