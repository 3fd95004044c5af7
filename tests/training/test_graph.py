"""suite/training/graph.py: the learning-rate schedule, the moving average of
the weights, and the replicated step against one device's."""
import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

import train
from helpers import TRAIN_ARGS, resolve_flags, toy_training
from suite.data import contract
from suite.hardware import precision as hardware_precision
from suite.model import bookkeeping, checkpoints
from suite.model.network import build_network
from suite.training import distribute
from suite.training.config import Optimisation
from suite.training.graph import (build_replicated_training_graph, build_training_graph,
                                  learning_rate_schedule)
from suite.training.session import best_savers
from suite.training.validation import build_validation_graph, validation_accuracy


def schedule(lr_schedule, steps, warmup_epochs=1, steps_per_epoch=10, total_steps=100):
    optimisation = Optimisation(learning_rate=0.1, warmup_epochs=warmup_epochs,
                                lr_schedule=lr_schedule)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        step = tf.compat.v1.placeholder(tf.int64, [])
        rate = learning_rate_schedule(optimisation, step, steps_per_epoch, total_steps)
        return [float(session.run(rate, {step: s})) for s in steps]


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_zero():
    rates = schedule("cosine", [0, 4, 9, 10, 55, 100])
    np.testing.assert_allclose(rates[:3], [0.01, 0.05, 0.1], rtol=1e-5)
    # After the 10 warm-up steps, cosine over the remaining 90.
    np.testing.assert_allclose(rates[3], 0.1, rtol=1e-5)
    np.testing.assert_allclose(rates[4], 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), rtol=1e-4)
    assert rates[5] == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    # warm-up of one step, then progress = (step - 1) / 99
    rates = schedule("step", [20, 49, 53, 80, 90], warmup_epochs=0)
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-5)


def test_warmup_never_takes_more_than_half_of_a_short_run():
    rates = schedule("cosine", [4, 5], warmup_epochs=5, total_steps=10)
    assert rates[0] == pytest.approx(0.1 * 5 / 5, rel=1e-5)  # ramp ends at step 5 of 10




def test_the_moving_average_follows_the_step_and_moves_fast_at_first():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        weights, train_op, moving_average = toy_training(0.999)
        average = moving_average.average(weights)
        assert average.op.name == checkpoints.average_name("toy/w")
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
                    if checkpoints.is_average(v.op.name)]


def with_steps(config, steps_per_epoch, total_steps):
    """config with its schedule's length set (what the learning rate follows)."""
    return dataclasses.replace(config, steps=dataclasses.replace(
        config.steps, steps_per_epoch=steps_per_epoch, total_steps=total_steps))


@pytest.mark.slow  # trains: a small graph on 2 replicas, built and stepped in this process
def test_two_replicas_keep_the_averages_under_single_device_names(colour_data, tmp_path):
    data_dir = colour_data[1]
    args = train.parse_args(["--data_dir", data_dir, "--model_dir", str(tmp_path),
                             *TRAIN_ARGS, "--batch_size", "4", "--moving_average_decay", "0.5",
                             "--learning_rate", "0.1"])
    fp32 = hardware_precision.choose_precision("fp32")
    plan = distribute.Plan(["/cpu:0", "/cpu:1"], logical_cpus=2)
    config = with_steps(resolve_flags(args, contract.load_dataset_info(data_dir), plan, fp32), 4, 40)
    with tf.Graph().as_default():
        strategy = distribute.make_strategy(plan)
        ops = build_replicated_training_graph(config, strategy)
        validation = build_validation_graph(config, ops["moving_average"])
        saver = tf.compat.v1.train.Saver()
        savers = best_savers(ops["moving_average"])
        session_config = distribute.session_config(plan, strategy,
                                                   hardware_precision.session_config(False, fp32))
        with tf.compat.v1.Session(config=session_config) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(ops["initializers"])
            for _ in range(3):
                session.run(ops["train_op"])
            top1 = validation_accuracy(session, validation, data_dir)
            path = saver.save(session, str(tmp_path / "model.ckpt"), global_step=3,
                              write_meta_graph=False)
            checkpoints.save_best(session, savers[bookkeeping.MOVING_AVERAGE], str(tmp_path), 3,
                                  top1[bookkeeping.MOVING_AVERAGE], bookkeeping.MOVING_AVERAGE)
    assert set(top1) == {bookkeeping.RAW, bookkeeping.MOVING_AVERAGE}
    regular = tf.train.load_checkpoint(path)
    names = regular.get_variable_to_shape_map()
    weights = "resnet/conv1/weights"
    assert checkpoints.average_name(weights) in names and not [n for n in names if "replica" in n]
    assert not np.array_equal(regular.get_tensor(weights),
                              regular.get_tensor(checkpoints.average_name(weights)))
    best = tf.train.load_checkpoint(checkpoints.resolve_checkpoint(str(tmp_path), "best"))
    assert not [n for n in best.get_variable_to_shape_map() if checkpoints.is_average(n)]
    np.testing.assert_array_equal(best.get_tensor(weights),
                                  regular.get_tensor(checkpoints.average_name(weights)))




def _variables(session):
    return {v.op.name: value for v, value in zip(
        tf.compat.v1.global_variables(), session.run(tf.compat.v1.global_variables()))}


@pytest.mark.slow  # trains: three small graphs built and stepped in this process
def test_two_replicas_step_is_one_devices_on_each_half_averaged(small_data, tmp_path):
    """One step of 2 replicas on 2 logical CPUs, per-replica batch 4, against
    one device stepped from the same weights on images 0-3 (A) and 4-7 (B).
    With plain SGD momentum the first update is -lr x gradient, so the
    replicas' weights must be (A + B) / 2: their gradients averaged. Batch
    norm uses each replica's own batch statistics, so the reference is
    "each half on one device", not the 8 images at once; the moving
    statistics are the first replica's, so they must equal A's."""
    args = train.parse_args(["--data_dir", small_data, "--model_dir", str(tmp_path),
                             "--model", "layer_14", "--image_size", "32", "--batch_size", "4",
                             "--stem", "imagenet",  # the larger last stage this test was sized for
                             "--seed", "3", "--learning_rate", "0.5",
                             "--weight_decay", "0.05"])  # L2 as large as the rest
    fp32 = hardware_precision.choose_precision("fp32")  # exact comparisons need the same arithmetic
    plan = distribute.Plan(["/cpu:0", "/cpu:1"], logical_cpus=2)
    config = with_steps(resolve_flags(args, contract.load_dataset_info(small_data), plan, fp32), 4, 40)
    start = str(tmp_path / "start")

    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(args.seed)
        ops = build_training_graph(config)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=hardware_precision.session_config(False, fp32)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, start, write_meta_graph=False)
            steps = []
            for _ in range(2):  # A, then B from the same start
                saver.restore(session, start)
                session.run(ops["train_op"])
                steps.append(_variables(session))
    a, b = steps

    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(args.seed)
        strategy = distribute.make_strategy(plan)
        ops = build_replicated_training_graph(config, strategy)
        saver = tf.compat.v1.train.Saver()
        config_proto = distribute.session_config(plan, strategy,
                                                 hardware_precision.session_config(False, fp32))
        with tf.compat.v1.Session(config=config_proto) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(ops["initializers"])
            saver.restore(session, start)  # the single-device names
            session.run(ops["train_op"])
            both = _variables(session)
            saved = saver.save(session, str(tmp_path / "model.ckpt"), global_step=1,
                               write_meta_graph=False)

    assert set(both) == set(a)
    assert both["global_step"] == 1
    trained = [name for name in a if name != "global_step" and "moving_" not in name]
    assert len(trained) > 50  # weights, batch-norm scales and offsets, momentum slots
    for name in trained:
        expected = (a[name] + b[name]) / 2
        scale = np.abs(expected).max()
        # float32 gradients summed in another order, with other threads: within
        # 1e-4 of each tensor's largest value (seen: 2e-5, on the momentum
        # slots, which hold the gradient); the halves' own steps differ by
        # more than 1e-3 of it (seen: 4e-3 at least), so A or B alone fails.
        assert np.abs(both[name] - expected).max() <= 1e-4 * scale, name
        assert np.abs(a[name] - b[name]).max() > 1e-3 * scale, name
    for name in (n for n in a if "moving_" in n):  # the first replica's, A's (seen: equal)
        scale = np.abs(a[name]).max()
        assert np.abs(both[name] - a[name]).max() <= 1e-4 * scale, name
        assert np.abs(b[name] - a[name]).max() > 1e-3 * scale, name

    # The checkpoint loads into the evaluation network, as Evaluation.py loads it.
    with tf.Graph().as_default():
        images = tf.zeros([1, 32, 32, 3])
        build_network(images, config.network.manifest(), is_train=False)
        with tf.compat.v1.Session() as session:
            checkpoints.restore(session, saved)
