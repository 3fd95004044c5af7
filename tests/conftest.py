"""The fixtures many test files share: a small learnable data set, a model
trained on it, and that model exported; each made once per test process.
The tests' helper functions are in helpers.py (pytest.ini puts the repository
and tests/ on sys.path)."""
import json
import os
import shutil
import tempfile

import pytest
from PIL import Image

from suite.plumbing import environment

# As each script does, before TensorFlow loads: pytest imports this file
# before any test file, and helpers.py imports TensorFlow.
environment.configure()
# No test reaches the internet or the user's cache for TF-slim's weights: a
# photo-sized run that names no test server finds none (refused at once) and
# trains from random weights, as offline (suite.training.start).
os.environ["RESNET_PRETRAINED_URL"] = "http://127.0.0.1:9/"
os.environ["RESNET_PRETRAINED_CACHE"] = tempfile.mkdtemp(prefix="pretrained-cache-")

from helpers import (JPEG_IMAGES, TRAIN_ARGS, make_colour_images, make_published,  # noqa: E402
                     run_script, serving)
from suite.data.convert import convert  # noqa: E402


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A folder for one test file's shared fixtures (a trained model is tens of
    MB a checkpoint), removed when that file's tests are done and none failed:
    as pytest.ini's tmp_path_retention_policy does for each test's tmp_path."""
    path = tmp_path_factory.mktemp("module")
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory):
    """FlowIO's output for the colour images: (image_dir, data_dir)."""
    root = tmp_path_factory.mktemp("colours")
    image_dir = make_colour_images(str(root / "images"))
    data_dir = str(root / "tfrecords")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", data_dir)
    return image_dir, data_dir


@pytest.fixture(scope="session")
def trained_model(colour_data, tmp_path_factory):
    """A model (TRAIN_ARGS) trained for 8 epochs on the colour data: its model_dir."""
    _, data_dir = colour_data
    model_dir = str(tmp_path_factory.mktemp("model") / "models")
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "8")
    return model_dir


@pytest.fixture(scope="session")
def exported(trained_model, tmp_path_factory):
    """One export run (SavedModel + TFLite + ONNX) of trained_model into a
    folder that already holds a version 3 and a non-version folder: {"dir",
    "saved_model", "tflite", "onnx", ...}."""
    root = tmp_path_factory.mktemp("export")
    export_dir = root / "serving"
    (export_dir / "3").mkdir(parents=True)          # an older version
    (export_dir / "notes").mkdir()                  # not a version: ignored
    tflite = root / "mobile" / "model.tflite"
    onnx_model = root / "backend" / "model.onnx"
    result = run_script("useModel.py", "--export", export_dir, "--export_tflite", tflite,
                        "--export_onnx", onnx_model, "--model_dir", trained_model, "--json")
    document = json.loads(result.stdout)["exported"]
    return dict(document, dir=str(export_dir))


@pytest.fixture(scope="session")
def sample_images(colour_data, tmp_path_factory):
    """A folder of JPEGs made from the colour images, and their bytes by name."""
    image_dir, _ = colour_data
    folder = tmp_path_factory.mktemp("jpegs")
    encoded = {}
    for name, colour, index in JPEG_IMAGES:
        with Image.open(os.path.join(image_dir, colour, f"{index:03d}.png")) as image:
            image.convert("RGB").save(folder / name, quality=90)
        encoded[name] = (folder / name).read_bytes()
    return str(folder), encoded


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """24 colour images, 2 training shards: FlowIO's output, made in-process."""
    root = tmp_path_factory.mktemp("distributed")
    image_dir = make_colour_images(str(root / "images"), per_class=8)
    data_dir = str(root / "tfrecords")
    convert(image_dir, data_dir, validation_ratio=0.25, num_shards=2, workers=1)
    return data_dir


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """TF-slim's resnet_v1_50 release, made here (helpers.make_published):
    (the folder the test server serves, the checkpoint's path)."""
    return make_published(tmp_path_factory.mktemp("published"))


@pytest.fixture()
def server(published):
    """A test server on 127.0.0.1 serving `published`: its base URL is
    server.url, the requests it answered server.requests."""
    with serving(published[0]) as httpd:
        yield httpd


@pytest.fixture(scope="session")
def photo_data(tmp_path_factory):
    """FlowIO's output for colour images of 40 px, photo-sized (above 32 px,
    where train.py starts from ImageNet's weights): (image_dir, data_dir)."""
    root = tmp_path_factory.mktemp("photos")
    image_dir = make_colour_images(str(root / "images"), per_class=16, size=40)
    data_dir = str(root / "tfrecords")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", data_dir)
    return image_dir, data_dir
