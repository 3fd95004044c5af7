"""suite/training/config.py: the defaults that follow the data (image size,
stem, epochs), the class weights, and a model directory written before the
library moved into suite/ resuming as it was."""
import json

import numpy as np
import pytest

import train
from helpers import resolve_flags
from suite.data import contract
from suite.hardware import precision as hardware_precision
from suite.model.manifest import MANIFEST_FILE
from suite.plumbing.errors import UserError
from suite.training import distribute
from suite.training.config import (class_weight_vector, default_epochs, default_image_size,
                                   default_stem)


@pytest.mark.parametrize("median_side,expected", [
    (10, 16), (28, 28), (32, 32), (33, 64), (150, 160), (1000, 224)])
def test_default_image_size_keeps_small_images_and_rounds_larger_ones_up_to_32(median_side,
                                                                              expected):
    info = {"image_size": {"height": {"median": median_side}, "width": {"median": 10}}}
    assert default_image_size(info) == expected


@pytest.mark.parametrize("image_size,expected", [(16, "small"), (32, "small"), (64, "imagenet"),
                                                 (224, "imagenet")])
def test_default_stem_is_small_for_small_images(image_size, expected):
    assert default_stem(image_size) == expected


@pytest.mark.parametrize("num_train,model,expected", [
    (800, "layer_14", 30), (20000, "layer_14", 15), (55000, "layer_14", 10),
    (1_200_000, "layer_14", 10), (55000, "layer_50", 10), (55000, "layer_14_half", 25),
    (20000, "layer_14_half", 30), (1_200_000, "layer_14_half", 10)])
def test_default_epochs_shrink_with_the_data_between_bounds(num_train, model, expected):
    assert default_epochs(num_train, model) == expected


def test_balanced_class_weights_are_inverse_frequency():
    train_counts = [10, 30]  # classes a and b
    np.testing.assert_allclose(class_weight_vector("balanced", train_counts), [2.0, 2 / 3])
    np.testing.assert_array_equal(class_weight_vector("none", train_counts), [1, 1])


def data_info(median_side):
    """dataset.json's record of 1,000 images of two classes."""
    return {"classes": ["bag", "coat"], "num_examples": {"train": 800, "validation": 200},
            "counts": {"bag": {"train": 400, "validation": 100},
                       "coat": {"train": 400, "validation": 100}},
            "image_size": {"height": {"median": median_side},
                           "width": {"median": median_side}},
            "options": {"max_side": None}, "fingerprint": "f" * 64}


@pytest.mark.parametrize("median_side,flags,expected", [
    (28, [], True),                         # small images, trained with flips
    (28, ["--augment", "none"], False),     # nothing was mirrored in training
    (28, ["--no-flip_average"], False),
    (64, [], False),                        # photos keep one pass
    (64, ["--flip_average"], True)])
def test_small_images_predict_with_the_mirror_average_unless_told(tmp_path, median_side, flags,
                                                                   expected):
    args = train.parse_args(["--model_dir", str(tmp_path / "models"), "--pretrained", "off",
                             *flags])
    config = resolve_flags(args, data_info(median_side), distribute.Plan(["/cpu:0"]),
                           hardware_precision.choose_precision("fp32"))
    assert config.network.flip_average is expected
    assert config.network.manifest()["flip_average"] is expected


# model.json as train.py wrote it before the library moved into suite/ (its
# "training" held train.py's flags): such a model directory must still resume.
EARLIER_MANIFEST = {
    "model": "layer_14_half", "num_classes": 2, "image_size": 28, "shortcut": "A",
    "stem": "small", "augmentation": {"preset": "light", "mixup": 0, "cutmix": 0,
                                      "random_erasing": 0},
    "pretrained": None, "flip_average": True,
    "preprocessing": {"mean_rgb": [123.68, 116.78, 103.94], "std_rgb": [58.4, 57.12, 57.38],
                      "eval_crop": 1.0, "max_side": None},
    "data": {"dir": "/data/tfrecords", "fingerprint": "f" * 64,
             "num_examples": {"train": 800, "validation": 200}},
    "tensorflow": "2.21.0",
    "precision": {"name": "bf16", "device": "CPU", "reason": "CPU has AMX (amx_bf16)"},
    "training": {"model": None, "shortcut": None, "image_size": None, "stem": None,
                 "augment": "auto", "mixup": 0, "cutmix": 0, "random_erasing": 0,
                 "flip_average": True, "batch_size": 64, "epochs": 7.0, "learning_rate": 0.05,
                 "lr_schedule": "cosine", "warmup_epochs": 2, "precision": "auto",
                 "mixed_precision": False, "seed": None, "verbose": False,
                 "replicas": 1, "workers": 1, "global_batch_size": 64}}


def test_a_model_directory_written_before_the_move_resumes_as_it_was(tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / MANIFEST_FILE).write_text(json.dumps(EARLIER_MANIFEST), encoding="utf-8")
    contract.write_labels(str(model_dir), ["bag", "coat"])
    (model_dir / "model.ckpt-12.index").write_bytes(b"")  # resuming: found by its file
    info = data_info(median_side=28)
    args = train.parse_args(["--model_dir", str(model_dir)])
    config = resolve_flags(args, info, distribute.Plan(["/cpu:0"]),
                     hardware_precision.choose_precision("fp32"))
    assert config.resuming
    stored = dict(EARLIER_MANIFEST, labels=["bag", "coat"])
    rebuilt = config.network.manifest(max_side=None)
    for key in ("model", "num_classes", "image_size", "shortcut", "stem", "pretrained",
                "flip_average", "labels", "preprocessing"):
        assert rebuilt[key] == stored[key], key
    assert config.optimisation.epochs == 7.0  # the run's own length, as it was resumed
    with pytest.raises(UserError, match="--image_size = 28, but this run has 32"):
        resolve_flags(train.parse_args(["--model_dir", str(model_dir), "--image_size", "32"]),
                      info, distribute.Plan(["/cpu:0"]),
                      hardware_precision.choose_precision("fp32"))
