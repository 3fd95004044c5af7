"""Shared helpers: the scripts run as subprocesses, as a user runs them."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cli  # noqa: E402

cli.configure_environment()  # as each script does, before TensorFlow loads in a test


def run_script(script, *args, timeout=600, check=True, **popen):
    """python SCRIPT ARGS from the repository root; returns CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {args} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def free_ports(count):
    """count TCP ports on 127.0.0.1 that are free now, for a local cluster."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


def make_colour_images(root, per_class=40, size=32, seed=0):
    """A small learnable data set: one dominant colour per class, noise and a
    random rectangle of another colour on top."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
            y, x = rng.integers(0, size // 2, 2)
            pixels[y:y + size // 3, x:x + size // 3] = rng.integers(0, 256, 3)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{i:03d}.png"))
    return root


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory):
    """FlowIO's output for the colour images: (image_dir, data_dir)."""
    root = tmp_path_factory.mktemp("colours")
    image_dir = make_colour_images(str(root / "images"))
    data_dir = str(root / "tfrecords")
    run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", data_dir)
    return image_dir, data_dir


TRAIN_ARGS = ("--model", "layer_14", "--image_size", "32", "--batch_size", "16",
              "--seed", "1")


@pytest.fixture(scope="session")
def trained_model(colour_data, tmp_path_factory):
    """A layer_14 model trained for 8 epochs on the colour data: its model_dir."""
    _, data_dir = colour_data
    model_dir = str(tmp_path_factory.mktemp("model") / "models")
    run_script("train.py", "--data_dir", data_dir, "--model_dir", model_dir, *TRAIN_ARGS,
               "--epochs", "8")
    return model_dir
