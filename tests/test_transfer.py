"""Shortcut options B/C, TF-slim resnet_v1 checkpoints, mixed precision, determinism."""

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim
from tf_slim.nets import resnet_v1

import hardware
import modeldir
import resnet
import train
from conftest import TRAIN_ARGS, run_script


def slim_arg_scope():
    """slim's resnet_arg_scope, with our batch norm (slim.batch_norm does not run
    on TF 2.21) and slim's 'SAME' max pooling."""
    with slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu, normalizer_fn=resnet.batch_norm,
                        normalizer_params={"is_training": False}):
        with slim.arg_scope([slim.max_pool2d], padding="SAME") as scope:
            return scope


@pytest.fixture(scope="module")
def slim_checkpoint(tmp_path_factory):
    """A resnet_v1_50 checkpoint written by TF-slim's own graph, every variable
    random (batch-norm statistics included), and slim's logits for an input."""
    path = str(tmp_path_factory.mktemp("slim") / "resnet_v1_50.ckpt")
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        with slim.arg_scope(slim_arg_scope()):
            logits, _ = resnet_v1.resnet_v1_50(tf.constant(images), num_classes=5,
                                               is_training=False)
        rng = np.random.default_rng(1)
        for variable in tf.compat.v1.global_variables():
            shape = variable.shape.as_list()
            if "moving_variance" in variable.name or "gamma" in variable.name:
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 0.05 if "weights" in variable.name else 0.2, shape)
            variable.load(value.astype(np.float32), session)
        tf.compat.v1.train.Saver().save(session, path, write_meta_graph=False)
        expected = session.run(logits)
    return path, images, np.squeeze(expected, axis=(1, 2))


def test_option_b_restored_from_slim_gives_slims_logits(slim_checkpoint):
    path, images, expected = slim_checkpoint
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        logits = resnet.build(tf.constant(images), "layer_50", 5, is_train=False, shortcut="B")
        session.run(tf.compat.v1.global_variables_initializer())
        train.warm_start(session, path, exclude_scopes="")
        ours = session.run(logits)
        # Every variable came from the checkpoint: nothing of ours is left over.
        names = {v.op.name for v in tf.compat.v1.global_variables()}
    stored = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
    assert {n.replace("resnet/", "resnet_v1_50/", 1) for n in names} == stored
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shortcut,projections", [("A", 0), ("B", 4), ("C", 16)])
def test_shortcut_options_add_projections_where_the_paper_says(shortcut, projections):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3])
        logits = resnet.build(images, "layer_50", 10, is_train=False, shortcut=shortcut)
        found = [v for v in tf.compat.v1.trainable_variables()
                 if v.op.name.endswith("shortcut/weights")]
    assert len(found) == projections and logits.shape.as_list() == [None, 10]


@pytest.mark.slow
def test_fine_tuning_from_slim_checkpoint_with_another_class_count(colour_data, slim_checkpoint,
                                                                   tmp_path):
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                        str(tmp_path / "models"), "--model", "layer_50", "--shortcut", "B",
                        "--stem", "imagenet",  # slim's resnet_v1 (32 px alone picks small)
                        "--image_size", "32", "--batch_size", "16", "--epochs", "1",
                        "--init_checkpoint", slim_checkpoint[0])
    assert "finished" in result.stdout
    # All but the two logits variables (5 classes there, 3 here) came from slim's.
    line = [l for l in result.stdout.splitlines() if l.startswith("initialised")][0]
    assert "2 excluded by --exclude_scopes, 0 not in it" in line
    assert modeldir.load_manifest(str(tmp_path / "models"))["shortcut"] == "B"


def _losses(stdout):
    return [line.split(" loss ")[1].split()[0] for line in stdout.splitlines()
            if line.startswith("step ")]


@pytest.mark.slow
def test_mixed_precision_and_xla_run_and_learn_on_the_cpu(colour_data, tmp_path):
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                        str(tmp_path / "models"), *TRAIN_ARGS, "--epochs", "6",
                        "--mixed_precision", "--xla", "--log_every_steps", "1")
    # --mixed_precision is --precision fp16: said on the first line, kept in model.json.
    assert result.stdout.startswith("precision fp16: as requested")
    assert modeldir.load_manifest(str(tmp_path / "models"))["precision"]["name"] == "fp16"
    losses = [float(x) for x in _losses(result.stdout)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    top1 = [float(l.split(": ")[1].split()[0]) for l in result.stdout.splitlines()
            if l.startswith("validation top-1")]
    assert top1[-1] > 0.6


@pytest.mark.slow
def test_deterministic_runs_repeat_the_loss_curve(colour_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir",
                            str(tmp_path / name), *TRAIN_ARGS, "--epochs", "2",
                            "--deterministic", "--log_every_steps", "1")
        runs.append(_losses(result.stdout))
        # The first line: what --precision auto chose on this machine, and why.
        assert result.stdout.splitlines()[0] == str(hardware.choose_precision())
    assert len(runs[0]) >= 10 and runs[0] == runs[1]
