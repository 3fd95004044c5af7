"""suite/evaluation/watch.py: Evaluation.py --watch evaluates each new
checkpoint while train.py writes them."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import REPO, finish
from suite.evaluation.watch import checkpoint_identity
from suite.model import checkpoints


def test_checkpoint_identity_tells_a_checkpoint_written_anew(tmp_path):
    """model.ckpt-10 deleted and written again (a model_dir emptied and
    trained again) is another checkpoint, though its name is the same."""
    prefix = str(tmp_path / "model.ckpt-10")
    with open(prefix + ".index", "wb") as f:
        f.write(b"an index")
    first = checkpoint_identity(prefix)
    assert checkpoint_identity(prefix) == first
    os.remove(prefix + ".index")
    assert checkpoint_identity(prefix) == (prefix, None)
    time.sleep(0.05)  # later, as a second run is: past the file system's clock tick
    with open(prefix + ".index", "wb") as f:
        f.write(b"an index")
    assert checkpoint_identity(prefix) != first


@pytest.mark.slow
def test_evaluation_watch_evaluates_each_new_checkpoint(colour_data, trained_model, tmp_path):
    """Evaluation.py --watch on a model folder: the newest checkpoint at once,
    then one that appears later (as train.py would write it), then the
    first of the folder emptied and trained again, at a lower step; then it
    stops after --watch_timeout seconds without another."""
    model_dir = str(tmp_path / "models")
    os.makedirs(model_dir)
    newest = checkpoints.list_checkpoints(trained_model)[0]
    for name in ("model.json", "labels.txt"):
        shutil.copy(os.path.join(trained_model, name), model_dir)

    def publish(step):  # data first, the .index last, as the Saver renames them
        for suffix in (".data-00000-of-00001", ".index"):
            shutil.copy(newest + suffix, os.path.join(model_dir, f"model.ckpt-{step}{suffix}"))

    def empty():  # as a user starting afresh in the same folder
        for name in os.listdir(model_dir):
            if name.startswith("model.ckpt-"):
                os.remove(os.path.join(model_dir, name))

    publish(10)
    watch = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "Evaluation.py"), "--watch", "--watch_timeout", "6",
         "--model_dir", model_dir, "--data_dir", colour_data[1], "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(watch.stdout.readline())
        publish(20)
        second = json.loads(watch.stdout.readline())
        # Emptied and trained again: step 10 again, below the last one seen.
        empty()
        publish(10)
        third = json.loads(watch.stdout.readline() or "null")
        code, out, err = finish(watch, 60)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    assert (first["step"], second["step"]) == (10, 20)
    assert third is not None and third["step"] == 10, "the second run's checkpoint was skipped"
    assert first["top1"] == second["top1"] == third["top1"] > 0.8  # the same weights
    assert code == 0 and out == "" and "stopped watching" in err
    assert any(name.startswith("events.") for name in os.listdir(os.path.join(model_dir, "eval")))
