"""suite/training/stages.py (train.py --fine_tune): which stages a run trains,
and what each leaves frozen, checked on the checkpoints real runs write."""
import numpy as np
import pytest
import tensorflow as tf

from helpers import TRAIN_ARGS, run_script
from suite.model.manifest import load_manifest
from suite.plumbing.errors import UserError
from suite.training import stages


@pytest.mark.parametrize("requested,gpu,budget,expected", [
    ("auto", False, None, ("head",)),
    ("auto", True, None, ("head", "all")),
    ("auto", False, 10.0, ("head", "all")),
    ("head", True, None, ("head",)),
    ("last_stage", False, None, ("head", "last_stage")),
    ("all", False, None, ("head", "all")),
])
def test_the_stages_of_each_choice(requested, gpu, budget, expected):
    assert stages.chosen_stages(requested, "weights.ckpt", False, gpu, budget, None) == expected


def test_random_weights_and_the_users_own_scopes_train_in_one_stage():
    assert stages.chosen_stages("auto", None, False, False, None, None) == ("all",)
    assert stages.chosen_stages("auto", "w.ckpt", False, False, None, "resnet/logits") == ("all",)
    assert stages.chosen_stages("auto", "w.ckpt", True, True, None, None) == ("all",)  # cluster
    for args, expected in (
            (("head", None, False, False, None, None), "needs trained weights to start from"),
            (("last_stage", "w", False, False, None, "resnet/block4"), "give one of them"),
            (("head", "w", True, False, None, None), "trains on one machine")):
        with pytest.raises(UserError, match=expected):
            stages.chosen_stages(*args)


def test_the_plan_gives_each_stage_its_steps_rate_and_frozen_part():
    head, last = stages.plan(("head", "last_stage"), num_train=1000, batch_size=64, views=3,
                             epochs=None, requested="last_stage", num_stages_of_model=4)
    assert (head.epochs, head.batch_size, head.steps_per_epoch) == (stages.HEAD_EPOCHS, 256, 12)
    assert head.end_step == stages.HEAD_EPOCHS * 12 and head.views == 3
    assert head.trainable_scopes == "resnet/logits" and head.cached
    assert last.epochs == 20  # about FINE_TUNE_IMAGES images
    assert last.end_step == head.end_step + 20 * (1000 // 64)
    # Every batch norm keeps its statistics; only block 4 and the classifier train.
    assert last.frozen_stages == 4 and last.pretrained_lr_ratio == stages.PRETRAINED_LR_RATIO
    assert last.trainable_scopes == "resnet/block4,resnet/postnorm,resnet/logits"
    assert not last.optional and not last.cached
    # --epochs is the last stage's; a head alone takes it.
    (alone,) = stages.plan(("head",), 1000, 64, 3, 4.0, "head", 4)
    assert alone.epochs == 4.0 and alone.end_step == 48


def test_a_moved_end_moves_the_stages_after_it():
    planned = stages.plan(("head", "all"), 1000, 64, 3, None, "auto", 4)
    moved = stages.moved_end(planned, 0, 100)
    assert moved[0].end_step == 100 and moved[0].epochs == round(100 / 12, 3)
    assert moved[1].end_step - 100 == planned[1].end_step - planned[0].end_step
    assert stages.from_record(stages.record(moved)) == moved


def values(checkpoint, names):
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in names}


@pytest.mark.slow  # two stages through the network of a small model
def test_last_stage_keeps_the_layers_below_and_every_batch_norms_statistics(
        colour_data, trained_model, tmp_path):
    model_dir = tmp_path / "models"
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--init_checkpoint", trained_model, "--fine_tune",
                        "last_stage", "--epochs", "2")
    assert "stage 2 of 2: the last stage and the classifier, the rest frozen (the pretrained " \
           "ones at 0.1x the rate)" in result.stdout
    manifest = load_manifest(str(model_dir))
    head, last = manifest["training"]["stages"]
    assert f"finished: step {last['end_step']}" in result.stdout
    start = tf.train.latest_checkpoint(trained_model)
    end = tf.train.latest_checkpoint(str(model_dir))
    frozen = ["resnet/conv1/weights", "resnet/conv1/BatchNorm/moving_mean",
              "resnet/block3/unit_1/bottleneck_v1/conv2/BatchNorm/moving_variance",
              "resnet/block3/unit_1/bottleneck_v1/conv3/weights"]
    frozen += ["resnet/block4/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean",
               "resnet/postnorm/moving_mean"]
    trained = ["resnet/block4/unit_1/bottleneck_v1/conv1/weights",
               "resnet/block4/unit_1/bottleneck_v1/conv1/BatchNorm/beta",
               "resnet/logits/weights"]
    before, after = values(start, frozen + trained), values(end, frozen + trained)
    for name in frozen:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name in trained:
        assert not np.array_equal(after[name], before[name]), name


@pytest.mark.slow  # a head run, then the stage through the network added to it
def test_a_head_alone_goes_on_through_the_network_when_asked(colour_data, trained_model,
                                                             tmp_path):
    model_dir = tmp_path / "models"
    command = ("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir, *TRAIN_ARGS,
               "--init_checkpoint", trained_model)
    first = run_script(*command, "--epochs", "1", "--moving_average_decay", "0.9")
    (head,) = load_manifest(str(model_dir))["training"]["stages"]
    assert f"finished: step {head['end_step']}" in first.stdout
    # The head validates its moving averages too, on the cached features.
    assert " moving average" in [line for line in first.stdout.splitlines()
                                 if line.startswith("validation top-1")][-1]
    again = run_script(*command, "--fine_tune", "all", "--epochs", "1",
                       "--moving_average_decay", "0.9")
    head_again, added = load_manifest(str(model_dir))["training"]["stages"]
    assert head_again == head and added["name"] == "all" and added["epochs"] == 1
    assert f"resuming from {model_dir / 'model.ckpt-'}{head['end_step']}" in again.stdout
    assert f"finished: step {added['end_step']}" in again.stdout
    refused = run_script(*command, "--fine_tune", "last_stage", check=False)
    assert refused.returncode != 0 and "can only follow a head alone" in refused.stderr
