"""suite/model/checkpoints.py: checkpoints listed by file, the default choice
(best/'s, else the newest), readers taking the moving averages only when the
latest validation preferred them, best/ keeping one checkpoint, and a foreign
checkpoint counted as unreadable."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

from helpers import one_error_line, run_script, toy_training
from suite.model import bookkeeping, checkpoints
from suite.model.network import build_network
from suite.plumbing import errors
from suite.training.session import best_savers


def test_checkpoints_are_listed_newest_first_by_their_index_files(tmp_path):
    for step in (5, 100, 20):
        (tmp_path / f"model.ckpt-{step}.index").write_bytes(b"")
    (tmp_path / "model.ckpt-7.data-00000-of-00001").write_bytes(b"")  # no index: not complete
    found = checkpoints.list_checkpoints(str(tmp_path))
    assert [checkpoints.checkpoint_step(p) for p in found] == [100, 20, 5]
    assert checkpoints.resolve_checkpoint(str(tmp_path)) == found[0]
    with pytest.raises(errors.UserError, match="no checkpoint"):
        checkpoints.resolve_checkpoint(str(tmp_path), "best")


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
        path = checkpoints.save_checkpoint(session, saver, str(model_dir), steps)
        savers = best_savers(moving_average)
        checkpoints.save_best(session, savers[bookkeeping.MOVING_AVERAGE], str(model_dir), steps,
                           0.9, bookkeeping.MOVING_AVERAGE)
        return (*session.run([weights, moving_average.average(weights)]), path)


def read_toy(checkpoint):
    """toy/w as a reader (checkpoints.restore without a saver) gets it."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        weights = slim.model_variable("toy/w", shape=[2])
        checkpoints.restore(session, checkpoint)
        return session.run(weights)


def test_readers_take_the_averages_only_when_the_latest_validation_preferred_them(tmp_path):
    weights, average, path = write_toy_checkpoint(tmp_path)
    assert not np.allclose(weights, average)
    stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert checkpoints.average_name("toy/w") in stored
    np.testing.assert_array_equal(read_toy(path), weights)  # no validation.json: raw
    bookkeeping.save_validation(str(tmp_path), {"step": 3, "top1": 0.8, "weights": bookkeeping.RAW})
    np.testing.assert_array_equal(read_toy(path), weights)
    assert checkpoints.checkpoint_weights(path) == bookkeeping.RAW
    bookkeeping.save_validation(str(tmp_path), {"step": 3, "top1": 0.8, "moving_average_top1": 0.9,
                                             "weights": bookkeeping.MOVING_AVERAGE})
    np.testing.assert_array_equal(read_toy(path), average)
    assert checkpoints.checkpoint_weights(path) == bookkeeping.MOVING_AVERAGE
    assert "as the moving averages of its weights" in checkpoints.describe_checkpoint(
        str(tmp_path), checkpoints.LATEST)
    # best/ holds the averages as plain variables under their own names.
    best = checkpoints.resolve_checkpoint(str(tmp_path), checkpoints.BEST)
    assert set(tf.train.load_checkpoint(best).get_variable_to_shape_map()) == {
        "toy/w", "global_step"}
    np.testing.assert_array_equal(read_toy(best), average)
    assert checkpoints.checkpoint_weights(best) == bookkeeping.MOVING_AVERAGE
    assert bookkeeping.load_best(str(tmp_path))["weights"] == bookkeeping.MOVING_AVERAGE


def test_best_keeps_one_checkpoint_whichever_saver_wrote_it(tmp_path):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        _, train_op, moving_average = toy_training(0.5)
        session.run(tf.compat.v1.global_variables_initializer())
        savers = best_savers(moving_average)
        for step, weights in ((1, bookkeeping.RAW), (2, bookkeeping.MOVING_AVERAGE),
                              (3, bookkeeping.RAW)):
            session.run(train_op)
            checkpoints.save_best(session, savers[weights], str(tmp_path), step, 0.5, weights)
    assert [checkpoints.checkpoint_step(p) for p in
            checkpoints.list_checkpoints(str(tmp_path / bookkeeping.BEST_DIR))] == [3]
    assert bookkeeping.load_best(str(tmp_path)) == {"step": 3, "validation_top1": 0.5,
                                                 "weights": bookkeeping.RAW}


def test_best_checkpoint_and_its_record_change_together(tmp_path):
    """A kill between best/'s checkpoint and best.json once left the new
    weights described as the old ones. Both now go into a new folder that
    one rename of the best link publishes: a save cut short before it (the
    folder written, not published) leaves the old pair, whole; the next
    save removes the leftover. A best/ folder of an earlier version is
    taken over."""
    model_dir = str(tmp_path)
    best_dir = os.path.join(model_dir, bookkeeping.BEST_DIR)
    fake_checkpoints(best_dir, 1)  # an earlier version's best/: a plain folder
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        _, train_op, moving_average = toy_training(0)
        session.run(tf.compat.v1.global_variables_initializer())
        saver = best_savers(moving_average)[bookkeeping.RAW]
        checkpoints.save_best(session, saver, model_dir, 3, 0.25)
        assert os.path.islink(best_dir)
        # A save killed before its rename: its folder is complete but not best/.
        checkpoints.write_best_folder(session, saver, model_dir, {
            "step": 6, "validation_top1": 0.5, "weights": bookkeeping.RAW})
        assert [checkpoints.checkpoint_step(p) for p in
                checkpoints.list_checkpoints(best_dir)] == [3]
        assert bookkeeping.load_best(model_dir)["step"] == 3
        assert "at step 3" in checkpoints.describe_checkpoint(model_dir)
        session.run(train_op)
        checkpoints.save_best(session, saver, model_dir, 9, 0.75)
    assert [checkpoints.checkpoint_step(p) for p in
            checkpoints.list_checkpoints(best_dir)] == [9]
    assert bookkeeping.load_best(model_dir)["step"] == 9
    hidden = [name for name in os.listdir(model_dir) if name.startswith(".")]
    assert hidden == [os.readlink(best_dir)]  # the cut save's and older folders are gone


def fake_checkpoints(folder, *steps):
    os.makedirs(folder, exist_ok=True)
    for step in steps:
        with open(os.path.join(folder, f"model.ckpt-{step}.index"), "wb"):
            pass


def test_the_default_checkpoint_is_bests_else_the_newest(tmp_path):
    model_dir = str(tmp_path)
    fake_checkpoints(model_dir, 100, 200)
    newest = os.path.join(model_dir, "model.ckpt-200")
    assert checkpoints.resolve_checkpoint(model_dir) == newest
    assert checkpoints.resolve_checkpoint(model_dir, "latest") == newest
    assert checkpoints.describe_checkpoint(model_dir) == \
        f"using {newest} (the newest; no best/ yet)"
    with pytest.raises(errors.UserError, match="no checkpoint in .*best"):
        checkpoints.resolve_checkpoint(model_dir, "best")

    best_dir = os.path.join(model_dir, bookkeeping.BEST_DIR)
    fake_checkpoints(best_dir, 150)
    with open(os.path.join(best_dir, bookkeeping.BEST_FILE), "w") as f:
        json.dump({"step": 150, "validation_top1": 0.873, "weights": bookkeeping.RAW}, f)
    best = os.path.join(best_dir, "model.ckpt-150")
    assert checkpoints.resolve_checkpoint(model_dir) == best
    assert checkpoints.resolve_checkpoint(model_dir, "best") == best
    assert checkpoints.resolve_checkpoint(model_dir, "latest") == newest
    assert checkpoints.describe_checkpoint(model_dir) == (
        f"using {best} (best validation top-1 0.8730 at step 150; --checkpoint latest for "
        f"the newest)")
    assert checkpoints.describe_checkpoint(model_dir, "latest") == (
        f"using {newest} (the newest; --checkpoint best for the best validated)")
    older = os.path.join(model_dir, "model.ckpt-100")
    assert checkpoints.resolve_checkpoint(model_dir, older) == older
    assert checkpoints.describe_checkpoint(model_dir, older) == f"using {older} (as given)"
    with pytest.raises(errors.UserError, match="'best' or 'latest'"):
        checkpoints.resolve_checkpoint(model_dir, os.path.join(model_dir, "model.ckpt-7"))


@pytest.fixture()
def model_copy(trained_model, tmp_path):
    """A copy of the trained model folder, free to damage."""
    copy = str(tmp_path / "models")
    shutil.copytree(trained_model, copy)
    return copy


def write_foreign_checkpoint(model_dir, step, num_classes=5):
    """A checkpoint of the same network with another class count, as if
    dropped into model_dir by hand from another run."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        images = tf.zeros([1, 32, 32, 3])
        build_network(images, {"model": "layer_14", "labels": list(range(num_classes))},
                               is_train=False)
        tf.compat.v1.train.get_or_create_global_step()
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"),
                                        global_step=step, write_meta_graph=False)


@pytest.mark.slow
def test_a_foreign_checkpoint_counts_as_unreadable(colour_data, model_copy):
    newest = checkpoints.list_checkpoints(model_copy)[0]
    write_foreign_checkpoint(model_copy, 99999)
    foreign = os.path.join(model_copy, "model.ckpt-99999")
    # Readers of the newest checkpoint pass over it with a warning...
    result = run_script("Evaluation.py", "--model_dir", model_copy, "--data_dir",
                        colour_data[1], "--json", "--checkpoint", "latest")
    assert json.loads(result.stdout)["checkpoint"] == newest
    assert f"warning: checkpoint {foreign} is unreadable or not this model's" in result.stderr
    # ...and asking for it by name is one line.
    result = run_script("useModel.py", os.path.join(colour_data[0], "red", "000.png"),
                        "--model_dir", model_copy, "--checkpoint", foreign, check=False)
    one_error_line(result, foreign, "cannot be loaded")
