"""suite/training/warm_start.py: slim's resnet_v1 checkpoint restored into
shortcut B gives slim's logits, and fine-tuning from it with another class
count."""
import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim
from tf_slim.nets import resnet_v1

import resnet
from helpers import run_script, slim_arg_scope
from suite.model.manifest import load_manifest
from suite.training.warm_start import warm_start




@pytest.fixture(scope="module")
def slim_checkpoint(module_tmp):
    """A resnet_v1_50 checkpoint written by TF-slim's own graph, every variable
    random (batch-norm statistics included), and slim's logits for an input."""
    path = str(module_tmp / "resnet_v1_50.ckpt")
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
        warm_start(session, path, exclude_scopes="")
        ours = session.run(logits)
        # Every variable came from the checkpoint: nothing of ours is left over.
        names = {v.op.name for v in tf.compat.v1.global_variables()}
    stored = set(tf.train.load_checkpoint(path).get_variable_to_shape_map())
    assert {n.replace("resnet/", "resnet_v1_50/", 1) for n in names} == stored
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


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
    assert load_manifest(str(tmp_path / "models"))["shortcut"] == "B"
