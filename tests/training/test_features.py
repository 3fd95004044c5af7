"""suite/training/features.py and head.py: the head stage's cached features.
The validation rows are what validation through the network sees (a head
run's validation top-1 is Evaluation.py's on the same checkpoint), and the
cache is reused only while what it was computed from is the same."""
import dataclasses
import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
import pytest

import resnet
import train
from helpers import TRAIN_ARGS, resolve_flags, run_script
from suite.data import contract
from suite.hardware import precision as hardware_precision
from suite.training import distribute, features


@pytest.mark.slow  # a head run, then Evaluation.py
def test_the_head_validates_on_what_the_network_sees(colour_data, trained_model, tmp_path):
    model_dir = tmp_path / "models"
    run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir, *TRAIN_ARGS,
               "--init_checkpoint", trained_model, "--fine_tune", "head", "--epochs", "3",
               "--precision", "fp32")
    with open(model_dir / "validation.json", encoding="utf-8") as f:
        head_top1 = json.load(f)["top1"]
    evaluation = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                            colour_data[1], "--checkpoint", "latest", "--precision", "fp32",
                            "--json")
    assert json.loads(evaluation.stdout)["top1"] == head_top1


@pytest.fixture()
def head_config(colour_data, trained_model, tmp_path):
    """The head stage's config of a run from trained_model, and the stage."""
    args = train.parse_args(["--data_dir", colour_data[1], "--model_dir", str(tmp_path),
                             *TRAIN_ARGS, "--init_checkpoint", trained_model,
                             "--fine_tune", "head"])
    config = resolve_flags(args, contract.load_dataset_info(colour_data[1]),
                           distribute.Plan(["/cpu:0"]),
                           hardware_precision.choose_precision("fp32"))
    return config.stage_config(config.stages[0]), config.stages[0]


def computed(config, stage):
    """features.features(config, stage): (the Features, whether it computed them)."""
    printed = io.StringIO()
    with redirect_stdout(printed):
        result = features.features(config, stage)
    return result, "cached in" not in printed.getvalue()


@pytest.mark.slow  # computes the features four times
def test_the_cache_is_used_while_its_key_matches_and_computed_afresh_otherwise(head_config):
    config, stage = head_config
    first, fresh = computed(config, stage)
    counts = config.data["num_examples"]
    depth = resnet.ResNet_demo[config.network.model][-1]["depth"]  # the pooled features'
    assert fresh and first.train.shape == (stage.views * counts["train"], depth)
    # A validation row holds the image's features and its mirror image's: small images
    # predict with the mirror average by default.
    assert config.network.flip_average
    assert first.train.dtype == np.float16
    assert first.validation.shape == (counts["validation"], 2 * depth)
    per_class = contract.load_dataset_info(config.data_dir)["counts"]
    assert np.bincount(first.train_labels).tolist() == [  # every image, views times
        stage.views * per_class[name]["train"] for name in config.network.labels]
    again, fresh = computed(config, stage)
    assert not fresh
    np.testing.assert_array_equal(again.validation, first.validation)
    # Other augmentation: other training rows. The same validation rows (the eval transform).
    other = dataclasses.replace(config, augmentation=dataclasses.replace(
        config.augmentation, preset="none"))
    changed, fresh = computed(other, stage)
    assert fresh
    np.testing.assert_allclose(changed.validation, first.validation, atol=1e-2)
    # A damaged file is computed afresh, not an error.
    with open(os.path.join(config.model_dir, features.FOLDER, "train.npy"), "wb") as f:
        f.write(b"damaged")
    _, fresh = computed(other, stage)
    assert fresh
