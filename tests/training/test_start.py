"""suite/training/start.py: where train.py's weights start, as a user meets it.
Photo-sized data starts from TF-slim's ImageNet weights by default, served
here by a real HTTP server on 127.0.0.1 (the published fixture: a checkpoint
written by slim's own resnet_v1_50 graph); offline it trains from random
weights, saying why; a cached copy needs no network; a corrupt one is
fetched afresh. Small images keep training from scratch."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import MEMBER, free_ports, run_script
from suite.data import contract
from suite.model.manifest import load_manifest
from suite.preprocessing import normalization
from suite.training import pretrained

# ResNet-50 at 64 px (above 32: photo-sized), small enough to train in seconds.
PHOTO_ARGS = ("--image_size", "64", "--epochs", "1")


def train(data_dir, model_dir, url, cache, *flags, check=True):
    env = dict(os.environ, **{pretrained.URL_VARIABLE: url})
    return run_script("train.py", "--data_dir", data_dir, "--model_dir", str(model_dir),
                      "--pretrained_cache", str(cache), *PHOTO_ARGS, *flags, env=env,
                      check=check)


def dead_url():
    return f"http://127.0.0.1:{free_ports(1)[0]}/"


@pytest.mark.slow  # two ResNet-50 runs
def test_photos_start_from_imagenet_weights_and_train_the_head_on_cached_features(
        server, published, photo_data, tmp_path):
    _, data_dir = photo_data
    model_dir, cache = tmp_path / "models", tmp_path / "cache"
    result = train(data_dir, model_dir, server.url, cache)
    first = result.stdout.splitlines()[0]
    assert first == ("start: TF-slim's ImageNet weights (resnet_v1_50_2016_08_28), as the "
                     "images are photo-sized (median side 40 px); --pretrained off trains from "
                     "random weights")
    assert server.requests == [("/resnet_v1_50_2016_08_28.tar.gz", None, 200)]
    assert "downloading" in result.stderr  # the progress goes to stderr
    counts = contract.load_dataset_info(data_dir)["num_examples"]
    assert (f"the network's features of {5 * counts['train']} training rows (5 views of each "
            f"image) and {counts['validation']} validation images") in result.stdout
    manifest = load_manifest(str(model_dir))
    assert (manifest["model"], manifest["shortcut"], manifest["image_size"]) == \
        ("layer_50", "B", 64)
    assert manifest["pretrained"] == "resnet_v1_50_2016_08_28"
    assert manifest["preprocessing"]["mean_rgb"] == list(normalization.MEAN_RGB)
    assert manifest["preprocessing"]["std_rgb"] == [1.0, 1.0, 1.0]  # slim's: no division
    # Every variable but the logits (1000 classes there, 3 here) came from slim's.
    checkpoint = cache / "resnet_v1_50_2016_08_28" / MEMBER
    assert (f"initialised {len(pretrained.expected_shapes('layer_50'))} variables from "
            f"{checkpoint}; left at their initial values: 2 excluded by --exclude_scopes, 0 "
            f"not in it") in result.stdout
    training = manifest["training"]
    assert training["why"] == first and training["fine_tune"] == "auto"
    assert [stage["name"] for stage in training["stages"]] == ["head"]
    assert os.path.isfile(model_dir / "features" / "train.npy")
    # The frozen layers are slim's, value for value; only the classifier trained.
    trained = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    slims = tf.train.load_checkpoint(published[1])
    for name in ("block1/unit_1/bottleneck_v1/conv1/weights",
                 "block4/unit_3/bottleneck_v1/conv3/BatchNorm/moving_variance"):
        np.testing.assert_array_equal(trained.get_tensor("resnet/" + name),
                                      slims.get_tensor("resnet_v1_50/" + name))
    assert trained.get_tensor("resnet/logits/weights").shape == (1, 1, 2048, 3)
    evaluation = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir", data_dir,
                            "--json")
    assert json.loads(evaluation.stdout)["num_examples"] == counts["validation"]
    # Resuming fetches nothing, even with another (empty) cache.
    resumed = train(data_dir, model_dir, server.url, tmp_path / "empty")
    assert resumed.stdout.startswith(f"start: resuming {model_dir} (it started from "
                                     f"resnet_v1_50_2016_08_28)")
    assert "already trained to step" in resumed.stdout and len(server.requests) == 1
    assert not (tmp_path / "empty").exists()

    # The cached copy needs no network; a corrupt one is removed and fetched afresh.
    again = train(data_dir, tmp_path / "offline", dead_url(), cache)
    assert again.stdout.startswith("start: TF-slim's ImageNet weights")
    checkpoint.write_bytes(b"not a checkpoint")
    fetched = train(data_dir, tmp_path / "refetched", server.url, cache)
    assert f"{checkpoint} is not TF-slim's resnet_v1_50_2016_08_28 checkpoint (TensorFlow " \
           f"cannot read it" in fetched.stderr
    assert fetched.stdout.startswith("start: TF-slim's ImageNet weights")
    assert len(server.requests) == 2


@pytest.mark.slow  # runs train.py
def test_offline_photos_train_from_random_weights_saying_why_in_one_line(photo_data, tmp_path):
    _, data_dir = photo_data
    url = dead_url()
    result = train(data_dir, tmp_path / "models", url, tmp_path / "cache", "--epochs", "1")
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"start: random weights, as TF-slim's ImageNet weights cannot be "
                            f"had: cannot download {url}resnet_v1_50_2016_08_28.tar.gz (")
    assert f"put it at {tmp_path / 'cache' / 'resnet_v1_50_2016_08_28.tar.gz'}" in first
    assert first.endswith("; --pretrained off skips them")
    assert "Traceback" not in result.stderr
    manifest = load_manifest(str(tmp_path / "models"))
    assert manifest["pretrained"] is None and manifest["training"]["why"] == first
    assert (manifest["model"], manifest["shortcut"], manifest["stem"]) == \
        ("layer_14", "A", "imagenet")  # today's from-scratch defaults for photos
    assert manifest["training"]["fine_tune"] is None


@pytest.mark.slow  # runs train.py
def test_pretrained_on_offline_is_an_error_and_off_never_fetches(photo_data, tmp_path):
    _, data_dir = photo_data
    url = dead_url()
    required = train(data_dir, tmp_path / "on", url, tmp_path / "cache", "--pretrained", "on",
                     check=False)
    assert required.returncode != 0 and "Traceback" not in required.stderr
    assert f"error: cannot download {url}resnet_v1_50_2016_08_28.tar.gz" in required.stderr
    assert not (tmp_path / "on" / "model.json").exists()
    off = train(data_dir, tmp_path / "off", url, tmp_path / "unused", "--pretrained", "off",
                "--epochs", "1")
    assert off.stdout.splitlines()[0] == "start: random weights (--pretrained off)"
    assert not (tmp_path / "unused").exists()


@pytest.mark.slow  # runs train.py
def test_small_images_and_networks_without_weights_keep_random_weights(colour_data, photo_data,
                                                                       tmp_path):
    url = dead_url()  # nothing may be fetched
    small = train(colour_data[1], tmp_path / "small", url, tmp_path / "cache",
                  "--image_size", "32")
    assert small.stdout.splitlines()[0] == (
        "start: random weights, as the images are small (median side 32 px, the small stem) "
        "and ImageNet's weights are for photos; --pretrained on uses them anyway")
    other = train(photo_data[1], tmp_path / "other", url, tmp_path / "cache", "--model",
                  "layer_14", "--epochs", "1")
    assert other.stdout.splitlines()[0] == (
        "start: random weights, as TF-slim publishes no ImageNet weights for --model layer_14 "
        "(it does for layer_50, layer_101, layer_152)")
    assert not (tmp_path / "cache").exists()
