"""clients/onnx_predict.py with TensorFlow made unimportable: the same answers
as useModel.py --json, its text output, and its one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import JPEG_IMAGES, REPO, run_script
from suite.model.manifest import load_manifest






# Runs a script with every import of TensorFlow (and of the packages that only
# the TensorFlow side installs) failing, as in a venv with only
# clients/requirements-onnx.txt, but without the cost of making one.
WITHOUT_TENSORFLOW = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "tf_slim", "tf2onnx", "onnx", "keras",
                                  "tf_keras", "tensorboard", "ai_edge_litert"}:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_tensorflow(*args, cwd):
    """clients/onnx_predict.py ARGS in a fresh process where TensorFlow cannot
    be imported; cwd outside the repository, so nothing is found from there."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW,
                           os.path.join(REPO, "clients", "onnx_predict.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_onnx_client_without_tensorflow_agrees_with_use_model(exported, colour_data,
                                                             sample_images, trained_model,
                                                             tmp_path):
    """Every colour image (PNGs, re-encoded as FlowIO stores them), JPEGs kept
    byte for byte (4:2:0), an unreadable file and a missing path: the same
    JSON as useModel.py --json, the same top-1, probabilities within 1e-3."""
    image_dir, _ = colour_data
    jpeg_folder, _ = sample_images
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [image_dir, jpeg_folder, broken, tmp_path / "missing.png"]
    labels = load_manifest(trained_model)["labels"]
    expected = json.loads(run_script("useModel.py", *inputs, "--model_dir", trained_model,
                                     "--json", "--top_k", len(labels)).stdout)
    result = run_without_tensorflow(exported["onnx"], *inputs, "--json", "--top_k",
                                    len(labels), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["checkpoint"] == expected["checkpoint"]
    assert len(document["results"]) == len(expected["results"]) == 120 + len(JPEG_IMAGES) + 2
    for ours, theirs in zip(document["results"], expected["results"]):
        assert ours.keys() == theirs.keys() and ours["path"] == theirs["path"]
        if "error" in theirs:
            assert ours["error"] == theirs["error"]
            continue
        assert ours["label"] == theirs["label"], ours["path"]
        assert [p["label"] for p in ours["predictions"]][:1] == [theirs["label"]]
        mine = {p["label"]: p["probability"] for p in ours["predictions"]}
        for prediction in theirs["predictions"]:
            assert abs(mine[prediction["label"]] - prediction["probability"]) < 1e-3, ours
    assert [r["path"] for r in document["results"] if "error" in r] == [
        str(tmp_path / "missing.png"), str(broken)]
    # The model is good enough that agreeing is about real predictions
    # (chance: 40 of the 120).
    correct = sum(r["label"] == os.path.basename(os.path.dirname(r["path"]))
                  for r in document["results"] if os.path.dirname(os.path.dirname(
                      r["path"])) == image_dir)
    assert correct >= 100


@pytest.mark.slow
def test_onnx_client_text_output_and_errors_without_tensorflow(exported, colour_data,
                                                              tmp_path):
    image = os.path.join(colour_data[0], "red", "000.png")
    result = run_without_tensorflow(exported["onnx"], image, "--top_k", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{image}: red  (red 0.") and line.count(", ") == 1
    # Only unreadable inputs: one line each, exit code 1.
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = run_without_tensorflow(exported["onnx"], empty, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"{empty}: error: empty file"]
    # A file that is not a model, and a model without its labels: one line, exit 2.
    result = run_without_tensorflow(empty, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "not an ONNX model" in result.stderr
    alone = tmp_path / "alone.onnx"
    shutil.copy(exported["onnx"], alone)
    result = run_without_tensorflow(alone, image, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "alone.labels.txt" in result.stderr
