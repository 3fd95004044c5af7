"""The bookkeeping files of train.py's validations in a model directory:

    best/best.json    the step, validation top-1 and weights (RAW or
                      MOVING_AVERAGE) of best/'s checkpoint
    validation.json   the latest validation: its top-1 for the raw and the
                      averaged weights and which were better (readers of a
                      regular checkpoint take those), and, when early
                      stopping ended the run, where and why
"""
import json
import os

from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write_json

BEST_DIR = "best"
BEST_FILE = "best.json"
VALIDATION_FILE = "validation.json"
RAW, MOVING_AVERAGE = "raw", "moving average"  # which weights (best.json, validation.json)


def load_best(model_dir):
    """best/best.json: the step, validation top-1 and weights of the best checkpoint."""
    return load_best_record(os.path.join(model_dir, BEST_DIR),
                            {"step": None, "validation_top1": -1.0, "weights": RAW})


def load_best_record(folder, default=None):
    """The best.json in folder (best/), or default where there is none."""
    return _read_json(os.path.join(folder, BEST_FILE), default)


def save_best_record(best_dir, record):
    _write_json(os.path.join(best_dir, BEST_FILE), record)


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


def _write_json(path, record):
    """atomic_write_json for train.py's bookkeeping files, failing in one line."""
    try:
        atomic_write_json(path, record)
    except OSError as error:
        raise UserError(f"cannot write {path} ({reason(error)}): free some space or fix "
                        f"its permissions, then run train.py again to resume")
