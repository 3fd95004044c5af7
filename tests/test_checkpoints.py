"""The checkpoint a reader takes by default: best/'s when there is one,
else the newest; --checkpoint latest, best and a prefix; the line that says
which. On real files."""
import json
import os

import pytest

import cli
import modeldir


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
        json.dump({"step": 150, "validation_top1": 0.873}, f)
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
