"""suite/export/pixel_graph.py: a pixel model and its labels file are written
as a pair, both or neither, and never through a planted link."""
import os

import pytest

from helpers import run_script
from suite.export import pixel_graph
from suite.plumbing.errors import UserError

LABELS = ["red", "green", "blue"]


def old_pair(folder):
    """An earlier export's model and labels file in folder: (model, labels)."""
    model, labels = folder / "model.onnx", folder / "model.labels.txt"
    model.write_bytes(b"the old model")
    labels.write_text("cat\ndog\n", encoding="utf-8")
    return model, labels


def test_the_pair_replaces_the_old_pair(tmp_path):
    model, labels = old_pair(tmp_path)
    written = pixel_graph.write_model_files("--export_onnx", str(model), b"new", LABELS)
    assert written == str(labels)
    assert (model.read_bytes(), labels.read_text(encoding="utf-8")) == (
        b"new", "red\ngreen\nblue\n")
    assert sorted(os.listdir(tmp_path)) == ["model.labels.txt", "model.onnx"]  # no staging left
    assert {os.stat(p).st_mode & 0o777 for p in (model, labels)} == {0o644}


def test_labels_that_cannot_be_written_leave_the_old_model(tmp_path):
    """The labels file cannot be replaced (here a folder is in its place): the
    old model is still there, unchanged, and the line names the labels file."""
    model, _ = old_pair(tmp_path)
    (tmp_path / "model.labels.txt").unlink()
    (tmp_path / "model.labels.txt").mkdir()
    with pytest.raises(UserError) as error:
        pixel_graph.write_model_files("--export_onnx", str(model), b"new", LABELS)
    assert str(error.value).startswith(
        f"--export_onnx {model}: cannot write {tmp_path / 'model.labels.txt'} ("), error.value
    assert "nothing was replaced" in str(error.value)
    assert model.read_bytes() == b"the old model"
    assert sorted(os.listdir(tmp_path)) == ["model.labels.txt", "model.onnx"]
    # Without an old model, none is left behind either.
    model.unlink()
    with pytest.raises(UserError):
        pixel_graph.write_model_files("--export_onnx", str(model), b"new", LABELS)
    assert os.listdir(tmp_path) == ["model.labels.txt"] and not os.listdir(
        tmp_path / "model.labels.txt")


def test_a_model_that_cannot_be_written_leaves_the_old_labels(tmp_path):
    _, labels = old_pair(tmp_path)
    (tmp_path / "model.onnx").unlink()
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(UserError) as error:
        pixel_graph.write_model_files("--export_onnx", str(tmp_path / "model.onnx"), b"new",
                                      LABELS)
    assert f"cannot write {tmp_path / 'model.onnx'} (" in str(error.value)
    assert labels.read_text(encoding="utf-8") == "cat\ndog\n"
    assert sorted(os.listdir(tmp_path)) == ["model.labels.txt", "model.onnx"]


def planted_links(path, victim):
    """Symbolic links to victim under the names a writer of path and its
    labels file might use for temporaries: FILE.tmp."""
    links = [path + ".tmp", os.path.splitext(path)[0] + ".labels.txt.tmp"]
    for link in links:
        os.symlink(victim, link)
    return links


def test_planted_links_are_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    model = str(tmp_path / "model.onnx")
    links = planted_links(model, victim)
    pixel_graph.write_model_files("--export_onnx", model, b"new", LABELS)
    assert victim.read_text(encoding="utf-8") == "precious"
    assert all(os.readlink(link) == str(victim) for link in links)
    with open(model, "rb") as f:
        assert f.read() == b"new"


@pytest.mark.slow
def test_the_onnx_export_does_not_write_through_planted_links(trained_model, tmp_path):
    """useModel.py --export_onnx with links planted at FILE.onnx.tmp and the
    labels file's .tmp (the TFLite export writes through the same
    write_model_files): the file they point to is untouched, the links stay,
    and nothing else is left."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    model = str(tmp_path / "model.onnx")
    links = planted_links(model, victim)
    run_script("useModel.py", "--export_onnx", model, "--model_dir", trained_model)
    assert victim.read_text(encoding="utf-8") == "precious"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["model.onnx", "model.labels.txt", "victim.txt"] + [os.path.basename(p) for p in links])
