"""What the tests share: the scripts run as subprocesses, as a user runs them,
free ports on 127.0.0.1, and small real data and hostile files built for real."""
import contextlib
import functools
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import zlib

import numpy as np
import tensorflow as tf
import tf_slim as slim
from PIL import Image
from tf_slim.nets import resnet_v1

import resnet
from suite.preprocessing.augment import preprocess_for_train
from suite.training.graph import add_moving_average


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, timeout=600, check=True, **popen):
    """python SCRIPT ARGS from the repository root; returns CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {args} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# Runs a script with every import of TensorFlow (and of the packages that only
# the TensorFlow side installs) failing, as in a venv with only the clients'
# requirements, but without the cost of making one.
WITHOUT_TENSORFLOW = """
import os, runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "tf_slim", "tf2onnx", "onnx", "keras",
                                  "tf_keras", "tensorboard", "ai_edge_litert"}:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])  # as `python SCRIPT` has it
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def without_tensorflow(client, *args):
    """The command that runs clients/CLIENT ARGS where TensorFlow cannot be imported."""
    return [sys.executable, "-c", WITHOUT_TENSORFLOW, os.path.join(REPO, "clients", client),
            *map(str, args)]


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


# The tests' network: the small images' default, a quarter of layer_14's
# computation and checkpoint size, where every test trains its model again.
TRAIN_ARGS = ("--model", "layer_14_half", "--image_size", "32", "--batch_size", "16",
              "--seed", "1")


@functools.lru_cache(maxsize=None)  # a second to make the largest; made once
def png(width, height):
    """A valid 8-bit grayscale PNG of zeros, compressed row by row: a 12,000 x
    12,000 one is 140 KB on disk and 144 MB decoded."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def encoded(image, fmt="JPEG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width=96, height=64, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def cut_jpeg(data):
    """The first half of a JPEG with its end-of-image marker appended: libjpeg
    pads the rest grey with only a warning, and Pillow accepts it."""
    return data[:len(data) // 2] + b"\xff\xd9"


def flipped_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@contextlib.contextmanager
def no_hang(seconds=10):
    """Fails the test instead of hanging it, should something open a pipe."""
    def stop(*_):
        raise TimeoutError(f"still blocked after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as a Windows share or an old zip leaves them


def make_tree(root, classes=("cat", "dog"), per_class=3):
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            noise(32, 32, seed=100 * index + i).save(os.path.join(folder, f"{i}.png"))
    return root


def strict_json(path):
    """The JSON document at path, parsed as strictly as other languages do:
    UTF-8, and no lone surrogate in any string."""
    with open(path, "rb") as f:
        document = json.loads(f.read().decode("utf-8"))
    json.dumps(document, ensure_ascii=False).encode("utf-8")
    return document


def error_lines(stderr):
    """The lines a user reads, without TensorFlow's own log lines."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def one_error_line(result, *expected):
    """The run failed with exit code 2 and exactly one 'error:' line, which
    contains every expected text; no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def slim_arg_scope():
    """slim's resnet_arg_scope, with our batch norm (slim.batch_norm does not run
    on TF 2.21) and slim's 'SAME' max pooling."""
    with slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu, normalizer_fn=resnet.batch_norm,
                        normalizer_params={"is_training": False}):
        with slim.arg_scope([slim.max_pool2d], padding="SAME") as scope:
            return scope


def toy_training(decay, start=(1.0, 2.0), target=(0.0, 0.0), learning_rate=0.25):
    """A model variable "toy/w" trained towards target by plain gradient
    descent, with add_moving_average; in the current graph."""
    global_step = tf.compat.v1.train.get_or_create_global_step()
    weights = slim.model_variable("toy/w", initializer=tf.constant(start))
    loss = tf.reduce_sum((weights - tf.constant(target)) ** 2)
    step = tf.compat.v1.train.GradientDescentOptimizer(learning_rate).minimize(
        loss, global_step=global_step)
    with tf.control_dependencies([step]):
        train_op = tf.identity(loss)
    ops = add_moving_average(decay, train_op, global_step)
    return weights, ops.get("train_op", train_op), ops["moving_average"]


def finish(process, timeout):
    """(exit code, stdout, stderr) of a started process once it ends; a test
    failure, the process killed, if it runs past timeout seconds."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return process.returncode, out, err


def sorted_to_label_order(outputs, num_classes):
    """The signature's best-first probabilities back in labels.txt order."""
    ids, values = outputs["class_ids"].numpy(), outputs["probabilities"].numpy()
    table = np.zeros((len(ids), num_classes), np.float32)
    np.put_along_axis(table, ids, values, axis=1)
    return table


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files of server.root with "Range: bytes=N-" (206 Partial
    Content), as download.tensorflow.org does; logs (path, Range header,
    status) of every request in server.requests. server.ranges False: a
    server that ignores Range; server.cut_after N: the next response ends
    after N bytes of its body, as a dropped connection."""

    def do_GET(self):
        path = os.path.join(self.server.root, self.path.lstrip("/"))
        asked = self.headers.get("Range")
        if not os.path.isfile(path):
            self.server.requests.append((self.path, asked, 404))
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        if not self.server.ranges:
            start = 0
        if start >= size and asked:
            self.server.requests.append((self.path, asked, 416))
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        status = 206 if asked and self.server.ranges else 200
        self.server.requests.append((self.path, asked, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        remaining = size - start
        if self.server.cut_after is not None:
            remaining, self.server.cut_after = min(remaining, self.server.cut_after), None
        with open(path, "rb") as f:
            f.seek(start)
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                self.wfile.write(chunk)
                remaining -= len(chunk)
        self.close_connection = True

    def log_message(self, *args):  # the test asserts on server.requests instead
        pass


@contextlib.contextmanager
def http_server(handler, **attributes):
    """A ThreadingHTTPServer on 127.0.0.1 answering with handler (a
    BaseHTTPRequestHandler class), in a thread, for the with block: its base
    URL is .url, and the attributes are set on it for the handler to read."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(httpd, name, value)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def serving(root):
    """http_server serving the files of root with RangeHandler: the requests
    it answered are .requests."""
    return http_server(RangeHandler, root=root, requests=[], ranges=True, cut_after=None)


# JPEG copies of colour images: (file name, colour folder, image number).
JPEG_IMAGES = [(f"{colour}_{i}.jpg", colour, i) for colour in ("blue", "green", "red")
               for i in (0, 7, 13)]


def use_model_probabilities(paths, model_dir, labels):
    """useModel.py --json on paths, in fp32 as the SavedModel computes:
    {basename: probabilities in label order}. (bf16 against fp32:
    tests/prediction/test_classifier.py.)"""
    result = run_script("useModel.py", *paths, "--model_dir", model_dir, "--json",
                        "--top_k", str(len(labels)), "--precision", "fp32")
    table = {}
    for entry in json.loads(result.stdout)["results"]:
        assert "error" not in entry, entry
        row = np.zeros(len(labels))
        for prediction in entry["predictions"]:
            row[labels.index(prediction["label"])] = prediction["probability"]
        table[os.path.basename(entry["path"])] = row
    return table


def hostile_folder(folder, colour_data):
    """A folder of what a user may hand useModel.py: {name: what must happen}."""
    os.makedirs(folder)
    image_dir, _ = colour_data
    shutil.copy(os.path.join(image_dir, "red", "001.png"), os.path.join(folder, "good.png"))
    shutil.copy(os.path.join(image_dir, "blue", "002.png"),
                os.path.join(folder, NOT_UTF8 + ".png"))
    os.mkfifo(os.path.join(folder, "pipe.jpg"))
    os.symlink("/dev/zero", os.path.join(folder, "zero.jpg"))
    for name, data in {"wide.png": png(70_000, 1), "thin.png": png(60_000, 1),
                       "big.png": png(12_000, 12_000),
                       "cut.jpg": cut_jpeg(encoded(noise(200, 200), quality=95))}.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return {"good.png": "red", "caf\\xe9.png": "blue",
            "pipe.jpg": "not a regular file (a named pipe)",
            "zero.jpg": "not a regular file (a character device)",
            "wide.png": "a side over 65,500", "thin.png": "too thin", "big.png": "too large",
            "cut.jpg": "premature end of data segment"}


def jpeg(width, height, seed=0):
    """A JPEG of random pixels, at quality 95."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def augment(encoded, image_size, seed):
    """The training augmentation of one JPEG, run: a normalised image."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        return session.run(preprocess_for_train(
            tf.constant(encoded), image_size, tf.constant(seed, tf.int64)))


def resolve_flags(args, info, plan, precision):
    """suite.training.config.resolve as train.py calls it: the start decided
    first (suite.training.start), from the model directory's model.json when
    resuming."""
    from suite.training import config, start
    stored = config.stored_manifest(args.model_dir)
    return config.resolve(args, info, plan, precision, start.decide(args, info, stored), stored)


# What TF-slim publishes for layer_50 (suite.training.pretrained).
TARBALL = "resnet_v1_50_2016_08_28.tar.gz"
MEMBER = "resnet_v1_50.ckpt"


def save_v1_checkpoint(path):
    """The variables of the current graph, saved as the published checkpoints
    are: TensorFlow's V1 format, one file."""
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1).save(
            session, str(path), write_meta_graph=False)


def make_tarball(path, member_path, member_name=MEMBER):
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:  # level 1: ~100 MB in seconds
        archive.add(member_path, arcname=member_name)


def make_published(root):
    """TF-slim's resnet_v1_50 release made under root (a pathlib.Path): the
    checkpoint written by slim's own resnet_v1_50 graph (ImageNet's 1000
    classes, initial weights) and a folder "served" holding its tarball;
    returns (that folder, the checkpoint's path)."""
    checkpoint = root / MEMBER
    with tf.Graph().as_default():
        with slim.arg_scope(slim_arg_scope()):
            resnet_v1.resnet_v1_50(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]),
                                   num_classes=1000, is_training=False)
        save_v1_checkpoint(checkpoint)
    served = root / "served"
    served.mkdir()
    make_tarball(served / TARBALL, checkpoint)
    return str(served), str(checkpoint)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_screenshot(page, shot, width=1200, height=1600):
    """Headless Chromium (Debian's chromium) loads the page from the disk
    and saves a screenshot: its colours, as Pillow counts them."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--window-size={width},{height}", f"--screenshot={shot}",
                    "file://" + os.path.abspath(page)], capture_output=True, timeout=120,
                   check=True)
    with Image.open(shot) as picture:
        assert picture.size == (width, height)
        return picture.convert("RGB").getcolors(1 << 20)

