"""The command line of every script: checked numbers, one-line errors, and
the flags several scripts share, each declared once here.

No TensorFlow is imported here (clients/onnx_predict.py uses this module too).
"""
import argparse
import math
import sys

DEFAULT_MODEL_DIR = "models"
DEFAULT_DATA_DIR = "data/tfrecords"
# What --precision accepts; suite.hardware.precision decides what auto means.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a wrong option reported as one line (exit code 2), like
    every other error of the suite, and a --verbose flag on every script."""

    def __init__(self, *args, verbose_flag=True, **kwargs):
        super().__init__(*args, **kwargs)
        if verbose_flag:
            self.add_argument("--verbose", action="store_true",
                              help="also show TensorFlow's own log lines (start-up, devices)")

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------
# Types: each checks its range when the command line is parsed, so a wrong
# number is one line before anything starts, not a traceback (or a hang)
# later. NaN and infinities are never a valid setting.
# ---------------------------------------------------------------------------
def _number(text, kind):
    try:
        value = kind(text)
    except ValueError:
        kind_name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind_name}")
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
# A count of epochs: more than a million is never a real setting, and its
# steps would overflow the schedule's arithmetic.
MAX_EPOCHS = 1_000_000
epochs = _checked(float, lambda v: 0 < v <= MAX_EPOCHS, f"positive, at most {MAX_EPOCHS:,}")
epochs_or_zero = _checked(float, lambda v: 0 <= v <= MAX_EPOCHS, f"0 to {MAX_EPOCHS:,}")


def int_in_range(low, high):
    """An integer type for argparse accepting low..high."""
    return _checked(int, lambda v: low <= v <= high, f"between {low} and {high}")


# ---------------------------------------------------------------------------
# Flags that several scripts share
# ---------------------------------------------------------------------------
def add_model_dir(parser, what="the model folder train.py writes and the other scripts read"):
    parser.add_argument("--model_dir", default=DEFAULT_MODEL_DIR,
                        help=f"{what} (default: %(default)s)")


def add_checkpoint(parser, all_of_them=False):
    """--checkpoint; with all_of_them, 'all' is a choice too (Evaluation.py)."""
    also = ", 'all' (every one)" if all_of_them else ""
    parser.add_argument("--checkpoint", default=None,
                        help=f"a checkpoint prefix, 'best' or 'latest' (the newest){also} "
                             f"(default: best/'s when there is one, else the newest)")


def add_precision(parser, purpose):
    """--precision for training ("training") or for evaluating and
    classifying ("prediction"); suite.hardware.precision decides what auto is."""
    if purpose == "training":
        help_text = ("what the layers compute in: bf16 (bfloat16) or fp16 (float16, with "
                     "dynamic loss scaling); variables, batch-norm statistics, the loss and "
                     "the softmax stay fp32. auto (the default): bf16 on CPUs with AMX or "
                     "avx512_bf16 and on GPUs of compute capability 8.0+, fp16 on GPUs 7.x, "
                     "fp32 elsewhere. The first line printed says what was chosen and why")
    else:
        help_text = ("compute in this precision (default: auto, the fastest this machine has "
                     "that keeps fp32's answers: fp32 on CPUs, fp16 on GPUs with tensor "
                     "cores; the output says which)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=help_text)


def add_json(parser, what="one JSON document"):
    parser.add_argument("--json", action="store_true", help=f"print {what}")


def add_answers(parser):
    """--top_k and --threshold: the form of a classification's answer."""
    parser.add_argument("--top_k", type=positive_int, default=3,
                        help="how many classes to list per image, most probable first "
                             "(default: %(default)s)")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="below this probability the answer is 'unknown'")
