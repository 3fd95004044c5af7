"""suite/training/pretrained.py (train.py --pretrained): TF-slim's published
resnet_v1 checkpoints fetched from a real HTTP server on 127.0.0.1 (cached,
checked, explained when there is no network), and the preprocessing they
were trained with, used by every reader of the model. What a hostile source
or cache gets: a gzip bomb, NaN weights, a stuck lock holder, a drip that
the user stops with Ctrl-C, a password in the URL, a planted link."""
import filecmp
import http.server
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

import train
from helpers import (MEMBER, REPO, TARBALL, finish, free_ports, http_server, make_tarball,
                     no_hang, save_v1_checkpoint)
from suite.data import contract
from suite.evaluation.evaluate import Source, predict_split
from suite.export import pixel_graph
from suite.export.saved_model import export_saved_model
from suite.hardware import precision as hardware_precision
from suite.images import eval_transform
from suite.model import checkpoints
from suite.model.manifest import MANIFEST_FILE, load_manifest, write_manifest
from suite.model.network import build_network, frozen_network, import_network
from suite.plumbing import errors
from suite.prediction.classifier import Classifier
from suite.preprocessing import normalization
from suite.training import pretrained, run


def fetch(server, cache, **options):
    """pretrained.fetch of layer_50 from the test server into cache: (the
    checkpoint's path, what it printed)."""
    out = io.StringIO()
    path = pretrained.fetch("layer_50", str(cache), base_url=server.url, out=out, **options)
    return path, out.getvalue()


def test_fetch_downloads_unpacks_and_then_uses_the_cache(server, published, tmp_path):
    path, printed = fetch(server, tmp_path)
    assert path == str(tmp_path / "resnet_v1_50_2016_08_28" / MEMBER)
    assert filecmp.cmp(path, published[1], shallow=False)
    assert server.requests == [("/" + TARBALL, None, 200)]
    # Progress without a terminal: a line saying what, then sparse lines.
    lines = printed.splitlines()
    assert lines[0] == f"downloading {server.url}{TARBALL} to {tmp_path / TARBALL}"
    assert 2 <= len(lines) <= 11 and lines[-1].endswith("(100%)") and "\r" not in printed
    # Unpacked: the tarball is gone, no temporary folder or part is left.
    assert sorted(os.listdir(tmp_path)) == ["resnet_v1_50_2016_08_28", TARBALL + ".lock"]
    # The second time: the cache, no request at all.
    again, printed = fetch(server, tmp_path)
    assert again == path and printed == "" and len(server.requests) == 1


def test_a_dropped_connection_keeps_the_part_and_the_next_run_resumes(server, published,
                                                                      tmp_path):
    server.cut_after = 30_000_000
    with pytest.raises(errors.UserError) as error:
        fetch(server, tmp_path)
    message = str(error.value)
    part = tmp_path / (TARBALL + ".part")
    assert "\n" not in message and "bytes before the end" in message
    assert f"the 30,000,000 bytes received are kept in {part}" in message
    assert part.stat().st_size == 30_000_000
    path, printed = fetch(server, tmp_path)
    assert server.requests[-1] == ("/" + TARBALL, "bytes=30000000-", 206)
    assert "resuming at 30.0 MB" in printed
    assert filecmp.cmp(path, published[1], shallow=False)


def test_files_put_there_by_hand_are_used_without_network(published, tmp_path):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/"
    # The tarball, where the no-network message says to put it:
    where = pretrained.paths("layer_50", str(tmp_path), dead)
    shutil.copy(os.path.join(published[0], TARBALL), where.tarball)
    path = pretrained.fetch("layer_50", str(tmp_path), base_url=dead, out=io.StringIO())
    assert filecmp.cmp(path, published[1], shallow=False) and not os.path.exists(where.tarball)
    # Or the unpacked checkpoint:
    other = pretrained.paths("layer_50", str(tmp_path / "other"), dead)
    os.makedirs(other.folder)
    shutil.copy(published[1], other.checkpoint)
    assert pretrained.fetch("layer_50", str(tmp_path / "other"), base_url=dead) == \
        other.checkpoint


def test_the_cache_folder_and_url_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(pretrained.CACHE_VARIABLE, raising=False)
    monkeypatch.delenv(pretrained.URL_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.cache_dir() == str(tmp_path / "xdg" / "resnet-suite" / "pretrained")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.cache_dir() == str(tmp_path / "home" / ".cache" / "resnet-suite" /
                                         "pretrained")
    monkeypatch.setenv(pretrained.CACHE_VARIABLE, str(tmp_path / "env"))
    assert pretrained.cache_dir() == str(tmp_path / "env")
    assert pretrained.cache_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert pretrained.paths("layer_101").url == \
        "http://download.tensorflow.org/models/resnet_v1_101_2016_08_28.tar.gz"
    monkeypatch.setenv(pretrained.URL_VARIABLE, "http://mirror.example/models")
    where = pretrained.paths("layer_152")
    assert where.url == "http://mirror.example/models/resnet_v1_152_2016_08_28.tar.gz"
    assert where.checkpoint == str(tmp_path / "env" / "resnet_v1_152_2016_08_28" /
                                   "resnet_v1_152.ckpt")


def assert_explains_where_to_put_it(message, url, cache):
    assert "\n" not in message and url in message
    assert f"put it at {cache / TARBALL} " in message
    assert f"{MEMBER} at {cache / 'resnet_v1_50_2016_08_28' / MEMBER})" in message


def test_no_network_names_the_url_and_where_to_put_the_file(tmp_path):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/models"   # nothing listens there
    with pytest.raises(errors.UserError) as error:
        pretrained.fetch("layer_50", str(tmp_path), base_url=dead, out=io.StringIO())
    assert "(Connection refused)" in str(error.value)
    assert_explains_where_to_put_it(str(error.value), f"{dead}/{TARBALL}", tmp_path)
    assert not (tmp_path / (TARBALL + ".part")).exists()


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(errors.UserError) as error:
            pretrained.fetch("layer_50", str(tmp_path), base_url=url, timeout=0.5,
                             out=io.StringIO())
    assert time.monotonic() - start < 10 and "(timed out)" in str(error.value)
    assert_explains_where_to_put_it(str(error.value), url + TARBALL, tmp_path)


def test_a_missing_file_on_the_server_is_one_line(server, tmp_path):
    server.root = str(tmp_path / "empty")
    with pytest.raises(errors.UserError) as error:
        fetch(server, tmp_path / "cache")
    assert "(HTTP 404 Not Found)" in str(error.value)
    assert_explains_where_to_put_it(str(error.value), server.url + TARBALL, tmp_path / "cache")


def small_checkpoint(path, shapes):
    """A V1 checkpoint holding variables of these {name: shape}."""
    with tf.Graph().as_default():
        for name, shape in shapes.items():
            tf.compat.v1.get_variable(name, shape)
        save_v1_checkpoint(path)


def wrong_tarball(kind, folder):
    """A file named like the tarball that is not TF-slim's checkpoint."""
    tarball, member = folder / TARBALL, folder / MEMBER
    if kind == "html":  # a captive portal's page
        tarball.write_text("<html><body>Please log in</body></html>")
    elif kind == "other member":
        member.write_text("hello")
        make_tarball(tarball, member, "README")
    else:
        if kind == "not a checkpoint":
            member.write_bytes(os.urandom(4096))
        elif kind == "lacks variables":
            small_checkpoint(member, {"resnet_v1_50/conv1/weights": [7, 7, 3, 64]})
        elif kind == "other shapes":
            small_checkpoint(member, {name: [1] for name in pretrained.expected_shapes("layer_50")})
        make_tarball(tarball, member)


@pytest.mark.parametrize("kind,reason", [
    ("html", "not a readable .tar.gz"),
    ("other member", f"it holds no file {MEMBER}"),
    ("not a checkpoint", "TensorFlow cannot read it as a checkpoint"),
    ("lacks variables", "it lacks 264 of the 265 variables of resnet_v1_50, e.g. "),
    ("other shapes", "resnet_v1_50/conv1/weights is [1] there but [7, 7, 3, 64] in "
                     "resnet_v1_50, and 264 more"),
])
def test_wrong_content_is_refused_in_one_line_and_not_kept(server, tmp_path, kind, reason):
    served = tmp_path / "served"
    served.mkdir()
    server.root = str(served)
    wrong_tarball(kind, served)
    cache = tmp_path / "cache"
    with pytest.raises(errors.UserError) as error:
        fetch(server, cache)
    message = str(error.value)
    assert "\n" not in message and reason in message, message
    assert message.startswith(f"{cache / TARBALL} (from {server.url}{TARBALL}) is not "
                              f"TF-slim's resnet_v1_50_2016_08_28")
    # Nothing is kept that a later run could take for the checkpoint: it downloads again.
    assert sorted(os.listdir(cache)) == [TARBALL + ".lock"]
    with pytest.raises(errors.UserError):
        fetch(server, cache)
    assert len(server.requests) == 2


def test_a_wrong_checkpoint_in_the_cache_is_removed_and_fetched_afresh(server, published,
                                                                      tmp_path):
    where = pretrained.paths("layer_50", str(tmp_path))
    os.makedirs(where.folder)
    small_checkpoint(where.checkpoint, {"resnet_v1_50/conv1/weights": [3, 3, 3, 64]})
    path, printed = fetch(server, tmp_path)
    assert printed.startswith(f"{where.checkpoint} is not TF-slim's resnet_v1_50_2016_08_28 "
                              f"checkpoint (it lacks ")
    assert "); removed it, fetching it afresh\n" in printed
    assert server.requests == [("/" + TARBALL, None, 200)]
    assert filecmp.cmp(path, published[1], shallow=False)


def test_the_check_covers_our_network_with_shortcut_b():
    expected = pretrained.expected_shapes("layer_50")
    # 53 convs (49 + 4 projections), each with weights and 4 batch-norm variables; no logits.
    assert len(expected) == 53 * 5
    assert expected["resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights"] == \
        [1, 1, 64, 256]
    assert not any("logits" in name for name in expected)


# ---------------------------------------------------------------------------
# Hostile sources and caches
# ---------------------------------------------------------------------------
class Zeros:
    """A file of size zero bytes, read without holding them."""

    def __init__(self, size):
        self.left = size

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def zeros_tarball(path, members):
    """A .tar.gz of (name, size) members of zeros: a gzip bomb (113 MB of
    zeros pack into 0.5 MB)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            archive.addfile(info, Zeros(size))


def serve_only(server, folder):
    """The test server serves folder (made if need be) instead of `published`."""
    folder.mkdir(exist_ok=True)
    server.root = str(folder)
    return folder


def cap():
    return pretrained.largest_plausible_size("layer_50")


def test_the_size_cap_fits_the_published_checkpoint(published):
    # The real tarball is 95 MB; ours (slim's own graph) is the checkpoint's
    # size, 102 MB; both under the cap, which is not far above them.
    assert os.path.getsize(published[1]) < cap() < 1.25 * os.path.getsize(published[1])


@pytest.mark.parametrize("members,detail", [
    (lambda cap: [(MEMBER, cap + 1)], lambda cap: f" ({MEMBER}: {cap + 1:,} bytes)"),
    (lambda cap: [("README", cap // 2 + 1), ("LICENSE", cap // 2 + 1), (MEMBER, 1000)],
     lambda cap: ""),
], ids=["one huge member", "members that add up"])
def test_a_gzip_bomb_is_refused_at_the_cap_and_not_kept(server, tmp_path, members, detail):
    sizes = members(cap())
    zeros_tarball(serve_only(server, tmp_path / "served") / TARBALL, sizes)
    cache = tmp_path / "cache"
    with pytest.raises(errors.UserError) as error:
        fetch(server, cache)
    assert str(error.value).startswith(
        f"{cache / TARBALL} (from {server.url}{TARBALL}) is not TF-slim's "
        f"resnet_v1_50_2016_08_28 (it unpacks to more than {cap():,} bytes, more than the "
        f"checkpoint can plausibly be{detail(cap())}); removed it")
    assert sorted(os.listdir(cache)) == [TARBALL + ".lock"]


def test_a_download_larger_than_the_cap_is_refused_before_a_byte(tmp_path):
    cache = tmp_path / "cache"
    with dripping(200_000_000) as server, no_hang(60), \
            pytest.raises(errors.UserError) as error:
        fetch(server, cache)
    assert f"(it is 200,000,000 bytes, more than the {cap():,} the file can be). " in \
        str(error.value)
    assert_explains_where_to_put_it(str(error.value), server.url + TARBALL, cache)
    assert sorted(os.listdir(cache)) == [TARBALL + ".lock"]


@pytest.fixture(scope="module")
def nan_checkpoint(module_tmp):
    """A checkpoint with every variable of resnet_v1_50, shapes right, all NaN."""
    path = module_tmp / MEMBER
    with tf.Graph().as_default():
        for name, shape in pretrained.expected_shapes("layer_50").items():
            tf.compat.v1.get_variable(name, shape,
                                      initializer=tf.compat.v1.constant_initializer(np.nan))
        save_v1_checkpoint(path)
    return path


def test_a_checkpoint_of_nan_is_refused_downloaded_or_cached(server, nan_checkpoint, tmp_path):
    make_tarball(serve_only(server, tmp_path / "served") / TARBALL, nan_checkpoint)
    first, shape = next(iter(pretrained.expected_shapes("layer_50").items()))
    problem = (f"{first} holds {math.prod(shape):,} NaN or infinite values, and 264 more "
               f"variables do")
    cache = tmp_path / "cache"
    with pytest.raises(errors.UserError) as error:
        fetch(server, cache)
    assert f"is not TF-slim's resnet_v1_50_2016_08_28 ({problem}); removed it" in \
        str(error.value)
    assert sorted(os.listdir(cache)) == [TARBALL + ".lock"]
    # Put there by hand: refused at its use, and removed (the server's is no better).
    where = pretrained.paths("layer_50", str(tmp_path / "by hand"))
    os.makedirs(where.folder)
    shutil.copy(nan_checkpoint, where.checkpoint)
    out = io.StringIO()
    with pytest.raises(errors.UserError):
        pretrained.fetch("layer_50", str(tmp_path / "by hand"), base_url=server.url, out=out)
    assert out.getvalue().startswith(f"{where.checkpoint} is not TF-slim's "
                                     f"resnet_v1_50_2016_08_28 checkpoint ({problem}); removed "
                                     f"it, fetching it afresh")
    assert not os.path.exists(where.folder)


HOLD_LOCK = """
import sys, time
from suite.plumbing.files import exclusive_lock
with exclusive_lock(sys.argv[1], "train.py --pretrained"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_lock_held_too_long_is_one_line_naming_its_holder(server, tmp_path):
    lock = tmp_path / (TARBALL + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        with no_hang(30):
            assert holder.stdout.readline() == "locked\n"
        out = io.StringIO()
        with no_hang(30), pytest.raises(errors.UserError) as error:
            pretrained.fetch("layer_50", str(tmp_path), base_url=server.url, out=out,
                             lock_wait=0.5)
    finally:
        holder.kill()
        holder.wait()
    who = f"train.py --pretrained (pid {holder.pid})"
    assert out.getvalue() == f"waiting for {who}, which is fetching {TARBALL} into {tmp_path}\n"
    assert str(error.value) == (f"{who} is still fetching {TARBALL} into {tmp_path} after "
                                f"0.5 s of waiting (it holds {lock}): let it finish or stop "
                                f"it, then run again")
    assert server.requests == []


def test_a_tarball_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    where = pretrained.paths("layer_50", str(tmp_path))
    os.mkfifo(where.tarball)  # where a tarball put there by hand goes
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/"
    with no_hang(30), pytest.raises(errors.UserError) as error:
        pretrained.fetch("layer_50", str(tmp_path), base_url=dead)
    assert f"{where.tarball} (from " in str(error.value)
    assert "(not a regular file but a named pipe); removed it" in str(error.value)
    assert not os.path.exists(where.tarball)


def test_a_password_in_the_url_is_never_shown(server, tmp_path):
    serve_only(server, tmp_path / "empty")
    url = server.url.replace("http://", "http://alice:secret@")
    with pytest.raises(errors.UserError) as error:
        pretrained.fetch("layer_50", str(tmp_path / "cache"), base_url=url, out=io.StringIO())
    message = str(error.value)
    assert f"cannot download {server.url.replace('http://', 'http://***@')}{TARBALL} " \
           f"(HTTP 404 Not Found)" in message
    assert "alice" not in message and "secret" not in message


def test_a_link_planted_as_the_part_file_is_one_line_and_not_followed(server, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    (tmp_path / "cache").mkdir()
    part = tmp_path / "cache" / (TARBALL + ".part")
    os.symlink(victim, part)
    with pytest.raises(errors.UserError) as error:
        fetch(server, tmp_path / "cache")
    assert str(error.value).startswith(f"{part} is a symbolic link (to {victim}), not a "
                                       f"download in progress")
    assert victim.read_text() == "precious" and server.requests == []


class Drip(http.server.BaseHTTPRequestHandler):
    """Promises server.length bytes, then sends a byte every 50 ms until the
    client goes."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(self.server.length))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0")
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def dripping(length):
    """An http_server answering with Drip."""
    return http_server(Drip, length=length)


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
def test_ctrl_c_during_the_download_is_one_line_and_keeps_the_part(colour_data, tmp_path,
                                                                   presses):
    cache = tmp_path / "cache"
    with dripping(100_000_000) as drip:
        env = dict(os.environ, **{pretrained.URL_VARIABLE: drip.url})
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), "--pretrained", "--model",
             "layer_50", "--data_dir", colour_data[1], "--model_dir", str(tmp_path / "models"),
             "--pretrained_cache", str(cache)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with no_hang(120):
                while not process.stderr.readline().startswith("downloading "):
                    assert process.poll() is None, process.stderr.read()
            time.sleep(0.3)  # a few bytes arrive
            for _ in range(presses):
                process.send_signal(signal.SIGINT)
                time.sleep(0.02)
            code, _, stderr = finish(process, 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    part = cache / (TARBALL + ".part")
    assert code == 130 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "Ctrl-C" in line or "rror" in line]
    assert lines == [f"stopped (Ctrl-C) fetching {drip.url}{TARBALL}; "
                     f"the {part.stat().st_size:,} bytes received are kept in {part} and the "
                     f"next run resumes there"], stderr
    assert part.stat().st_size > 0


def test_train_without_network_is_one_line_and_writes_no_model(colour_data, tmp_path,
                                                               monkeypatch):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/"
    monkeypatch.setenv(pretrained.URL_VARIABLE, dead)
    args = train.parse_args(["--pretrained", "--model", "layer_50", "--data_dir", colour_data[1],
                             "--model_dir", str(tmp_path / "models"),
                             "--pretrained_cache", str(tmp_path / "cache")])
    with pytest.raises(errors.UserError) as error:
        run.train(args)
    assert_explains_where_to_put_it(str(error.value), dead + TARBALL, tmp_path / "cache")
    assert not (tmp_path / "models" / MANIFEST_FILE).exists()


@pytest.mark.parametrize("flags,expected", [
    (["--pretrained", "--model", "layer_14"],
     "publishes ImageNet weights for layer_50, layer_101, layer_152 only, and --model is "
     "layer_14: add --model layer_50"),
    (["--pretrained", "--model", "layer_50", "--shortcut", "A"],
     "--pretrained needs --shortcut B"),
    (["--pretrained", "--model", "layer_101", "--init_checkpoint", "x.ckpt"],
     "--pretrained and --init_checkpoint both say where the weights come from"),
])
def test_train_refuses_what_contradicts_pretrained_in_one_line(capsys, flags, expected):
    with pytest.raises(SystemExit) as exit_code:
        train.parse_args(flags)
    stderr = capsys.readouterr().err
    assert exit_code.value.code == 2 and expected in stderr and stderr.count("\n") == 1


def test_pretrained_implies_shortcut_b():
    assert train.parse_args(["--pretrained", "--model", "layer_152"]).shortcut == "B"
    assert train.parse_args(["--pretrained", "--model", "layer_50", "--shortcut", "B"]).shortcut \
        == "B"


@pytest.fixture(scope="module")
def vgg_model(colour_data, tmp_path_factory):
    """A layer_14 model dir (initial weights, batch-norm statistics made up)
    whose model.json says slim's VGG preprocessing, as a --pretrained run
    writes it, for the colour data's classes."""
    model_dir = str(tmp_path_factory.mktemp("vgg") / "models")
    labels = contract.load_dataset_info(colour_data[1])["classes"]
    manifest = {"model": "layer_14", "num_classes": len(labels), "image_size": 32,
                "shortcut": "A", "pretrained": None,
                "preprocessing": dict(pretrained.NORMALIZATION,
                                      eval_crop=eval_transform.eval_crop(32), max_side=None)}
    write_manifest(model_dir, dict(manifest, labels=labels))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        build_network(images, dict(manifest, labels=labels), is_train=False)
        session.run(tf.compat.v1.global_variables_initializer())
        rng = np.random.default_rng(0)
        for variable in tf.compat.v1.global_variables():
            if "moving_variance" in variable.name:  # keeps the logits moderate
                variable.load(rng.uniform(50, 100, variable.shape).astype(np.float32), session)
        checkpoints.save_checkpoint(session, tf.compat.v1.train.Saver(), model_dir, 1)
    return model_dir


def network_on(model_dir, inputs):
    """Softmax of the model's network on already normalised inputs."""
    manifest = load_manifest(model_dir)
    network, _ = frozen_network(manifest, model_dir)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        return session.run(tf.nn.softmax(import_network(network, tf.constant(inputs))))


@pytest.mark.slow
def test_every_reader_normalises_as_model_json_says(vgg_model, colour_data, tmp_path):
    """Evaluation.py, useModel.py's Classifier, the SavedModel and the pixel
    graph of the TFLite/ONNX exports all subtract the mean and divide by 1."""
    _, data_dir = colour_data
    manifest = load_manifest(vgg_model)
    encoded = [tf.train.Example.FromString(record).features.feature["image/encoded"]
               .bytes_list.value[0] for path in contract.shard_paths(data_dir, "validation")
               for record in tf.compat.v1.io.tf_record_iterator(path)]
    pixels = np.stack([eval_transform.eval_pixels(e, 32) for e in encoded])
    expected = network_on(vgg_model, pixels - np.float32(normalization.MEAN_RGB))
    # The test means something: ImageNet's division would answer otherwise.
    imagenet = network_on(vgg_model, (pixels - np.float32(normalization.MEAN_RGB)) /
                          np.float32(normalization.STD_RGB))
    assert np.abs(imagenet - expected).max() > 0.05

    evaluated, _, _, _ = predict_split(
        manifest, vgg_model, None, Source(data_dir, "validation", 8),
        hardware_precision.choose_precision("fp32", purpose="prediction"))
    classifier = Classifier(vgg_model, precision="fp32")
    graph, _, _ = pixel_graph.frozen_pixel_graph(vgg_model)
    client_pixels = pixel_graph.tflite_pixels(encoded, 32)  # 0..255: the model normalises
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        pixel_model = session.run(tf.graph_util.import_graph_def(
            graph, {pixel_graph.PIXELS_INPUT: tf.constant(client_pixels)},
            return_elements=[pixel_graph.PROBABILITIES_OUTPUT + ":0"])[0])
    saved_model, _ = export_saved_model(vgg_model, str(tmp_path / "export"))
    serving = tf.saved_model.load(saved_model).signatures["serving_default"]
    outputs = serving(image_bytes=tf.constant(encoded))
    served = np.zeros_like(expected)
    np.put_along_axis(served, outputs["class_ids"].numpy(), outputs["probabilities"].numpy(), 1)
    for name, got in (("Evaluation.py", evaluated), ("Classifier", classifier.probabilities(
            encoded)), ("pixel graph", pixel_model), ("SavedModel", served)):
        np.testing.assert_allclose(got, expected, atol=2e-3, err_msg=name)
