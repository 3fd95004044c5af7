"""Good models by default: the moving average of the weights
(--moving_average_decay), early stopping (--early_stop_patience) and the
checkpoint a reader takes by default (best/'s, else the newest).

The decisions are tested as the small functions they are, on real graphs and
real checkpoint files; the slow tests run train.py and Evaluation.py as a
user does."""
import argparse
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

import FlowIO
import cli
import distribute
import hardware
import modeldir
import train
from conftest import TRAIN_ARGS, run_script


# ---------------------------------------------------------------------------
# Early stopping
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("step,best_step,patience,due", [
    (30, 30, 2, False),   # this validation was the best
    (40, 30, 2, False),   # one validation without improvement
    (50, 30, 2, True),    # two: patience 2 is used up
    (50, 30, 3, False),
    (50, 30, 0, False),   # 0: early stopping is off
    (50, None, 1, False),  # no best yet
    (20, 30, 1, False),   # resumed from before the best (its checkpoint was unreadable)
])
def test_early_stop_counts_validations_since_the_best(step, best_step, patience, due):
    assert train.early_stop_due(step, best_step, eval_every=10, patience=patience) is due


def test_a_run_that_stopped_early_goes_on_only_with_more_patience_or_steps():
    stopped = {"step": 50, "best_step": 30, "patience": 2, "epochs": 10, "total_steps": 100}
    assert not train.continues_after_early_stop(stopped, 2, 100)  # the same command
    assert not train.continues_after_early_stop(stopped, 0, 100)  # a forgotten flag
    assert not train.continues_after_early_stop(stopped, 1, 80)
    assert train.continues_after_early_stop(stopped, 3, 100)
    assert train.continues_after_early_stop(stopped, 2, 120)


# ---------------------------------------------------------------------------
# The moving average of the weights
# ---------------------------------------------------------------------------
def test_better_weights_are_the_raw_ones_on_a_tie():
    raw, average = modeldir.RAW, modeldir.MOVING_AVERAGE
    assert train.better_weights({raw: 0.8}) == raw
    assert train.better_weights({raw: 0.8, average: 0.85}) == average
    assert train.better_weights({raw: 0.8, average: 0.8}) == raw
    assert train.better_weights({raw: 0.9, average: 0.85}) == raw


def toy_training(decay, start=(1.0, 2.0), target=(0.0, 0.0), learning_rate=0.25):
    """A model variable "toy/w" trained towards target by plain gradient
    descent, with train.add_moving_average; in the current graph."""
    global_step = tf.compat.v1.train.get_or_create_global_step()
    weights = slim.model_variable("toy/w", initializer=tf.constant(start))
    loss = tf.reduce_sum((weights - tf.constant(target)) ** 2)
    step = tf.compat.v1.train.GradientDescentOptimizer(learning_rate).minimize(
        loss, global_step=global_step)
    with tf.control_dependencies([step]):
        train_op = tf.identity(loss)
    ops = train.add_moving_average(argparse.Namespace(moving_average_decay=decay), train_op,
                                   global_step)
    return weights, ops.get("train_op", train_op), ops["moving_average"]


def test_the_moving_average_follows_the_step_and_moves_fast_at_first():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        weights, train_op, moving_average = toy_training(0.999)
        average = moving_average.average(weights)
        assert average.op.name == modeldir.average_name("toy/w")
        session.run(tf.compat.v1.global_variables_initializer())
        before = session.run(weights)
        session.run(train_op)
        after, averaged = session.run([weights, average])
    np.testing.assert_allclose(after, before / 2)  # w - 0.25 * 2w
    # After the update of step 1 (global step 1): decay min(0.999, 2 / 11),
    # so the average already holds 9/11 of the new weights, not 0.001.
    np.testing.assert_allclose(averaged, before * 2 / 11 + after * 9 / 11, rtol=1e-6)


def test_starting_the_averages_sets_them_to_the_weights():
    """What train.py runs after restoring weights without averages (or
    --init_checkpoint): the averages start there, not at the random initial
    weights."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        weights, train_op, moving_average = toy_training(0.999)
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(weights.assign([5.0, -3.0]))  # as a restore does
        session.run(graph.get_operation_by_name("start_moving_averages"))
        np.testing.assert_array_equal(session.run(moving_average.average(weights)), [5, -3])


def test_no_decay_adds_no_average():
    with tf.Graph().as_default():
        _, _, moving_average = toy_training(0.0)
        assert moving_average is None
        assert not [v for v in tf.compat.v1.global_variables()
                    if modeldir.is_average(v.op.name)]


def write_toy_checkpoint(model_dir, steps=3):
    """A checkpoint in model_dir with toy/w and its moving average (decay 0.5),
    and best/ saved from the averages by train's best Saver: (the weights,
    their average, the checkpoint's path)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        weights, train_op, moving_average = toy_training(0.5)
        session.run(tf.compat.v1.global_variables_initializer())
        for _ in range(steps):
            session.run(train_op)
        saver = tf.compat.v1.train.Saver()
        path = modeldir.save_checkpoint(session, saver, str(model_dir), steps)
        savers = train._best_savers({"moving_average": moving_average})
        modeldir.save_best(session, savers[modeldir.MOVING_AVERAGE], str(model_dir), steps,
                           0.9, modeldir.MOVING_AVERAGE)
        return (*session.run([weights, moving_average.average(weights)]), path)


def read_toy(checkpoint):
    """toy/w as a reader (modeldir.restore without a saver) gets it."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        weights = slim.model_variable("toy/w", shape=[2])
        modeldir.restore(session, checkpoint)
        return session.run(weights)


def test_readers_take_the_averages_only_when_the_latest_validation_preferred_them(tmp_path):
    weights, average, path = write_toy_checkpoint(tmp_path)
    assert not np.allclose(weights, average)
    stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert modeldir.average_name("toy/w") in stored
    np.testing.assert_array_equal(read_toy(path), weights)  # no validation.json: raw
    modeldir.save_validation(str(tmp_path), {"step": 3, "top1": 0.8, "weights": modeldir.RAW})
    np.testing.assert_array_equal(read_toy(path), weights)
    assert modeldir.checkpoint_weights(path) == modeldir.RAW
    modeldir.save_validation(str(tmp_path), {"step": 3, "top1": 0.8, "moving_average_top1": 0.9,
                                             "weights": modeldir.MOVING_AVERAGE})
    np.testing.assert_array_equal(read_toy(path), average)
    assert modeldir.checkpoint_weights(path) == modeldir.MOVING_AVERAGE
    assert "as the moving averages of its weights" in modeldir.describe_checkpoint(
        str(tmp_path), modeldir.LATEST)
    # best/ holds the averages as plain variables under their own names.
    best = modeldir.resolve_checkpoint(str(tmp_path), modeldir.BEST)
    assert set(tf.train.load_checkpoint(best).get_variable_to_shape_map()) == {
        "toy/w", "global_step"}
    np.testing.assert_array_equal(read_toy(best), average)
    assert modeldir.checkpoint_weights(best) == modeldir.MOVING_AVERAGE
    assert modeldir.load_best(str(tmp_path))["weights"] == modeldir.MOVING_AVERAGE


def test_best_keeps_one_checkpoint_whichever_saver_wrote_it(tmp_path):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        _, train_op, moving_average = toy_training(0.5)
        session.run(tf.compat.v1.global_variables_initializer())
        savers = train._best_savers({"moving_average": moving_average})
        for step, weights in ((1, modeldir.RAW), (2, modeldir.MOVING_AVERAGE), (3, modeldir.RAW)):
            session.run(train_op)
            modeldir.save_best(session, savers[weights], str(tmp_path), step, 0.5, weights)
    assert [modeldir.checkpoint_step(p) for p in
            modeldir.list_checkpoints(str(tmp_path / modeldir.BEST_DIR))] == [3]
    assert modeldir.load_best(str(tmp_path)) == {"step": 3, "validation_top1": 0.5,
                                                 "weights": modeldir.RAW}


# ---------------------------------------------------------------------------
# The checkpoint a reader takes
# ---------------------------------------------------------------------------
def fake_checkpoints(folder, *steps):
    os.makedirs(folder, exist_ok=True)
    for step in steps:
        with open(os.path.join(folder, f"model.ckpt-{step}.index"), "wb"):
            pass


def test_the_default_checkpoint_is_bests_else_the_newest(tmp_path):
    model_dir = str(tmp_path)
    fake_checkpoints(model_dir, 100, 200)
    newest = os.path.join(model_dir, "model.ckpt-200")
    assert modeldir.resolve_checkpoint(model_dir) == newest
    assert modeldir.resolve_checkpoint(model_dir, "latest") == newest
    assert modeldir.describe_checkpoint(model_dir) == f"using {newest} (the newest; no best/ yet)"
    with pytest.raises(cli.UserError, match="no checkpoint in .*best"):
        modeldir.resolve_checkpoint(model_dir, "best")

    best_dir = os.path.join(model_dir, modeldir.BEST_DIR)
    fake_checkpoints(best_dir, 150)
    with open(os.path.join(best_dir, modeldir.BEST_FILE), "w") as f:
        json.dump({"step": 150, "validation_top1": 0.873, "weights": modeldir.RAW}, f)
    best = os.path.join(best_dir, "model.ckpt-150")
    assert modeldir.resolve_checkpoint(model_dir) == best
    assert modeldir.resolve_checkpoint(model_dir, "best") == best
    assert modeldir.resolve_checkpoint(model_dir, "latest") == newest
    assert modeldir.describe_checkpoint(model_dir) == (
        f"using {best} (best validation top-1 0.8730 at step 150; --checkpoint latest for "
        f"the newest)")
    assert modeldir.describe_checkpoint(model_dir, "latest") == (
        f"using {newest} (the newest; --checkpoint best for the best validated)")
    older = os.path.join(model_dir, "model.ckpt-100")
    assert modeldir.resolve_checkpoint(model_dir, older) == older
    assert modeldir.describe_checkpoint(model_dir, older) == f"using {older} (as given)"
    with pytest.raises(cli.UserError, match="'best' or 'latest'"):
        modeldir.resolve_checkpoint(model_dir, os.path.join(model_dir, "model.ckpt-7"))


def test_a_garbled_bookkeeping_file_is_one_line_naming_it(tmp_path):
    (tmp_path / modeldir.VALIDATION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(cli.UserError, match=f"{modeldir.VALIDATION_FILE} cannot be read.*"
                                            "delete it"):
        modeldir.load_validation(str(tmp_path))


# ---------------------------------------------------------------------------
# Data-parallel training keeps the averages
# ---------------------------------------------------------------------------
@pytest.mark.slow  # trains: a small graph on 2 replicas, built and stepped in this process
def test_two_replicas_keep_the_averages_under_single_device_names(colour_data, tmp_path):
    data_dir = colour_data[1]
    args = train.parse_args(["--data_dir", data_dir, "--model_dir", str(tmp_path),
                             *TRAIN_ARGS, "--batch_size", "4", "--moving_average_decay", "0.5"])
    args.learning_rate = 0.1
    info = FlowIO.load_dataset_info(data_dir)
    config, _ = train.resolve_config(args, info, str(tmp_path))
    fp32 = hardware.choose_precision("fp32")
    plan = distribute.Plan(["/cpu:0", "/cpu:1"], logical_cpus=2)
    with tf.Graph().as_default():
        strategy = distribute.make_strategy(plan)
        ops = train.build_replicated_training_graph(args, config, info, 4, 40, strategy, fp32)
        validation = train.build_validation_graph(args, config, 24, ops["moving_average"])
        saver = tf.compat.v1.train.Saver()
        savers = train._best_savers(ops)
        session_config = distribute.session_config(plan, strategy,
                                                   hardware.session_config(False, fp32))
        with tf.compat.v1.Session(config=session_config) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(ops["initializers"])
            for _ in range(3):
                session.run(ops["train_op"])
            top1 = train.validation_accuracy(session, validation, data_dir)
            path = saver.save(session, str(tmp_path / "model.ckpt"), global_step=3,
                              write_meta_graph=False)
            modeldir.save_best(session, savers[modeldir.MOVING_AVERAGE], str(tmp_path), 3,
                               top1[modeldir.MOVING_AVERAGE], modeldir.MOVING_AVERAGE)
    assert set(top1) == {modeldir.RAW, modeldir.MOVING_AVERAGE}
    regular = tf.train.load_checkpoint(path)
    names = regular.get_variable_to_shape_map()
    weights = "resnet/conv1/weights"
    assert modeldir.average_name(weights) in names and not [n for n in names if "replica" in n]
    assert not np.array_equal(regular.get_tensor(weights),
                              regular.get_tensor(modeldir.average_name(weights)))
    best = tf.train.load_checkpoint(modeldir.resolve_checkpoint(str(tmp_path), "best"))
    assert not [n for n in best.get_variable_to_shape_map() if modeldir.is_average(n)]
    np.testing.assert_array_equal(best.get_tensor(weights),
                                  regular.get_tensor(modeldir.average_name(weights)))


# ---------------------------------------------------------------------------
# train.py and Evaluation.py as a user runs them
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_training_with_averages_and_early_stopping_then_evaluation_uses_best(colour_data,
                                                                             tmp_path):
    _, data_dir = colour_data
    model_dir = str(tmp_path / "models")
    command = ("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "30", "--moving_average_decay", "0.9", "--early_stop_patience", "1")
    result = run_script(*command)
    # Both weights are validated each time; with patience 1 (the colour data
    # is learnt within a few epochs) the run stops at the first validation
    # that does not beat the best, long before 30 epochs.
    validations = [line for line in result.stdout.splitlines()
                   if line.startswith("validation top-1")]
    assert validations and all(" raw, " in line and " moving average" in line
                               for line in validations)
    assert "stopped early at step" in result.stdout, result.stdout
    newest = modeldir.list_checkpoints(model_dir)[0]
    stored = tf.train.load_checkpoint(newest).get_variable_to_shape_map()
    assert modeldir.average_name("resnet/conv1/weights") in stored
    best = modeldir.load_best(model_dir)
    assert best["weights"] in (modeldir.RAW, modeldir.MOVING_AVERAGE)
    best_path = modeldir.resolve_checkpoint(model_dir, "best")
    assert modeldir.checkpoint_step(best_path) == best["step"]
    assert not [name for name in tf.train.load_checkpoint(best_path).get_variable_to_shape_map()
                if modeldir.is_average(name)]
    record = modeldir.load_validation(model_dir)
    assert record["weights"] == train.better_weights(
        {modeldir.RAW: record["top1"], modeldir.MOVING_AVERAGE: record["moving_average_top1"]})
    assert record["stopped_early"]["step"] == modeldir.checkpoint_step(newest)
    assert f"(step {best['step']}, in {os.path.join(model_dir, 'best')})" in result.stdout

    # The same command again does not train on: it says why and how to go on.
    again = run_script(*command)
    assert f"stopped early at step {modeldir.checkpoint_step(newest)}" in again.stdout
    assert "--early_stop_patience above 1 or --epochs above 30" in again.stdout
    assert modeldir.list_checkpoints(model_dir)[0] == newest

    # Evaluation.py takes best/ by default and says so first; --checkpoint
    # latest takes the newest, read as the weights the latest validation preferred.
    result = run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir", data_dir)
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"using {best_path} (best validation top-1 "
                            f"{best['validation_top1']:.4f} at step {best['step']}")
    assert first.endswith("; --checkpoint latest for the newest)")
    assert f"checkpoint {best_path}:" in result.stdout and "macro-recall" in result.stdout
    latest = json.loads(run_script("Evaluation.py", "--model_dir", model_dir, "--data_dir",
                                   data_dir, "--checkpoint", "latest", "--json").stdout)
    assert latest["checkpoint"] == newest and latest["weights"] == record["weights"]
    # The newest checkpoint is the one just validated (train.py validated in
    # its own precision, bf16 on some CPUs: one image of 24 may differ).
    validated = record["top1" if record["weights"] == modeldir.RAW else "moving_average_top1"]
    assert latest["top1"] == pytest.approx(validated, abs=0.05)
