"""model.json, the manifest of a model directory: what the network is, how
its pixels are prepared, and how it was trained. As nanoGPT rebuilds its
model from the config stored beside the weights, every reader rebuilds ours
from model.json (suite.model.network.build_network), so a model directory
needs no flags to be used.

    model, num_classes, image_size, shortcut, stem   the network (resnet.py)
    preprocessing    mean_rgb, std_rgb (suite.preprocessing.normalization),
                     eval_crop, max_side (FlowIO.py's --max_side)
    flip_average     predictions average each image with its mirror image
    pretrained       the TF-slim weights it started from, or null
    augmentation, data, tensorflow, precision, training   how it was trained
    compute          its training compute (suite.training.compute)

labels.txt beside it holds the label order (suite.data.contract).
"""
import json
import math
import os

import resnet
from suite.data.contract import LABELS_FILE, read_labels, write_labels
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write_json

MANIFEST_FILE = "model.json"


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
    # defaults of suite.preprocessing.normalization and no --max_side.
    manifest.setdefault("preprocessing", {})
    labels_path = os.path.join(model_dir, LABELS_FILE)
    if not os.path.exists(labels_path):
        raise UserError(f"{labels_path} not found: copy the data's labels.txt (FlowIO.py's "
                        f"--output_dir) into {model_dir}")
    manifest["labels"] = read_labels(labels_path)
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
    standard deviation (suite.preprocessing.normalization's) must be three finite numbers, the
    deviations positive, or every input would be silently wrong (inf, NaN)."""
    if not isinstance(preprocessing, dict):
        return "preprocessing is not a JSON object"
    for key, low in (("mean_rgb", -math.inf), ("std_rgb", 0)):
        value = preprocessing.get(key, [1, 1, 1])  # absent: normalize()'s default
        if not (isinstance(value, list) and len(value) == 3 and all(
                type(v) in (int, float) and math.isfinite(v) and v > low for v in value)):
            return (f"preprocessing {key} is {value!r}, not three finite numbers"
                    + (" above 0" if low == 0 else ""))
    return None


def write_manifest(model_dir, manifest):
    """Writes a manifest into model_dir: its "labels" as labels.txt, the rest
    as model.json (each file whole or not at all)."""
    description = {key: value for key, value in manifest.items() if key != "labels"}
    try:
        os.makedirs(model_dir, exist_ok=True)
        atomic_write_json(os.path.join(model_dir, MANIFEST_FILE), description, indent=1)
        write_labels(model_dir, manifest["labels"])
    except OSError as error:
        raise UserError(f"cannot write to --model_dir {model_dir} ({reason(error)}): free some "
                        f"space or fix its permissions")
