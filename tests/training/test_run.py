"""suite/training/run.py: a step that cannot fit in memory is refused before
training starts; the model directory's lock and model.json never write
through a planted link."""
import os

import pytest

from suite.model.manifest import MANIFEST_FILE, write_manifest
from suite.plumbing import errors
from suite.training.run import LOCK_FILE, check_memory, writer_lock


def test_a_training_step_that_cannot_fit_in_memory_is_refused_before_it_starts():
    with pytest.raises(errors.UserError, match="--image_size 4096 .* lower --image_size"):
        check_memory("layer_152", 4096, "imagenet", 64)
    check_memory("layer_14", 32, "imagenet", 32)  # the demo fits


def test_a_lock_planted_as_a_link_is_refused_naming_it_and_its_target_untouched(tmp_path):
    """Another user of a shared folder plants .train.lock as a link to a
    file of yours: train.py refuses in one line, and never writes the file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / LOCK_FILE).symlink_to(victim)
    with pytest.raises(errors.UserError, match=f"{LOCK_FILE} is a symbolic link, which "
                                               f"train.py does not write through"):
        with writer_lock(str(model_dir)):
            pass
    assert victim.read_text() == "precious\n"


def test_model_json_planted_as_a_link_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / MANIFEST_FILE).symlink_to(victim)
    write_manifest(str(model_dir), {"labels": ["a", "b"], "model": "layer_14"})
    assert victim.read_text() == "precious\n"
    assert not os.path.islink(model_dir / MANIFEST_FILE)
