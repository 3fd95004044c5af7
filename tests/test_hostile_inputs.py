"""Hostile input files and FlowIO's output folder, in process and fast: what is
not a regular file, one file that breaks a step, sizes that would cost
unbounded memory, broken JPEGs, names that are not text, a folder FlowIO did
not write, two runs at once. Every case is built for real (named pipes,
sockets, sparse files, non-UTF-8 names, OS locks); FlowIO.convert runs in
this process. The scripts themselves run in test_hostile_scripts.py."""
import contextlib
import functools
import io
import json
import os
import signal
import socket
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import FlowIO
import cli
import imagefile
import useModel


# ---------------------------------------------------------------------------
# Hostile files, built for real
# ---------------------------------------------------------------------------
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


def special_files(folder):
    """A named pipe, a link to it, a socket, a character device and a folder:
    {name: path}. The socket stays bound while the returned object lives."""
    paths = {name: os.path.join(folder, name) for name in ("pipe", "link_to_pipe", "socket")}
    os.mkfifo(paths["pipe"])
    os.symlink(paths["pipe"], paths["link_to_pipe"])
    server = socket.socket(socket.AF_UNIX)
    server.bind(paths["socket"])
    paths.update(device="/dev/zero", folder=folder)
    return paths, server


# ---------------------------------------------------------------------------
# Kind 1: not a regular file; reads bounded by size
# ---------------------------------------------------------------------------
def test_what_is_not_a_regular_file_is_refused_unread(tmp_path):
    paths, server = special_files(str(tmp_path))
    expected = {"pipe": "a named pipe", "link_to_pipe": "a named pipe", "socket": "a socket",
                "device": "a character device", "folder": "a folder"}
    with server, no_hang():
        for name, kind in expected.items():
            with pytest.raises(imagefile.BadImage, match=f"not a regular file \\({kind}\\)"):
                imagefile.read_image_file(paths[name])
    # Nobody ever opened the pipe for reading: a writer finds no reader.
    with pytest.raises(OSError):
        os.open(paths["pipe"], os.O_WRONLY | os.O_NONBLOCK)
    # A link to a regular file is that file.
    (tmp_path / "image.jpg").write_bytes(encoded(noise()))
    os.symlink(tmp_path / "image.jpg", tmp_path / "link.jpg")
    assert imagefile.read_image_file(str(tmp_path / "link.jpg")) == encoded(noise())


def test_a_file_larger_than_any_image_is_refused_without_reading_it(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:  # sparse: no disk used, and nothing to read
        f.truncate(imagefile.MAX_FILE_BYTES + 1)
    with pytest.raises(imagefile.BadImage, match="more than any image we accept"):
        imagefile.read_image_file(str(huge))


# ---------------------------------------------------------------------------
# Kinds 2 and 3: one rule for what an image may claim, every step inside BadImage
# ---------------------------------------------------------------------------
SIZES = [  # (width, height, why refused or None)
    (8000, 8000, None), (1, 1, None), (400, 20, None), (20, 400, None),
    (421, 20, "too thin"), (60_000, 1, "too thin"), (70_000, 1, "too large"),
    (1, 70_000, "too large"), (12_000, 12_000, "too large"), (8001, 8000, "too large"),
    (65_501, 65_501, "too large"), (2**32 - 1, 2**32 - 1, "too large"), (0, 10, "no pixels"),
]


@pytest.mark.parametrize("width,height,why", SIZES)
def test_the_image_size_rule(width, height, why):
    problem = imagefile.size_problem(width, height)
    assert (problem is None) if why is None else (why in problem)


def test_the_served_graph_applies_the_same_rule():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        sizes = tf.compat.v1.placeholder(tf.int64, [2])
        allowed = useModel.size_is_allowed(sizes[1], sizes[0])
        for width, height, why in SIZES:
            assert session.run(allowed, {sizes: [width, height]}) == (why is None), (width, height)


@pytest.mark.parametrize("width,height,why", [(70_000, 1, "too large"), (60_000, 1, "too thin"),
                                              (12_000, 12_000, "too large")])
def test_an_oversized_png_is_one_bad_image_not_a_crash(width, height, why):
    # 1 x 70,000 is wider than JPEG's 65,500: it used to fail in the re-encode,
    # outside the per-file error path, and end the whole run.
    with pytest.raises(imagefile.BadImage, match=why):
        imagefile.encode_image_bytes(png(width, height))


def header_cases():
    """{name: (bytes, (height, width))} of every format the served graph takes."""
    rgba = noise(40, 30).convert("RGBA")
    cases = {
        "jpeg": (encoded(noise(40, 30)), (30, 40)),
        "png": (encoded(noise(40, 30), "PNG"), (30, 40)),
        "gif": (encoded(noise(40, 30).quantize(64), "GIF"), (30, 40)),
        "bmp": (encoded(noise(40, 30), "BMP"), (30, 40)),
        "webp_lossy": (encoded(noise(40, 30), "WEBP", quality=80), (30, 40)),
        "webp_lossless": (encoded(noise(40, 30), "WEBP", lossless=True), (30, 40)),
        "webp_alpha": (encoded(rgba, "WEBP", quality=80), (30, 40)),
    }
    # The same formats claiming far more than they hold.
    gif = bytearray(cases["gif"][0])
    gif[6:10] = struct.pack("<HH", 60_000, 60_000)
    bmp = bytearray(cases["bmp"][0])
    bmp[18:26] = struct.pack("<ii", 100_000, -100_000)  # a negative height: top-down rows
    vp8x = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\0" * 4 \
        + (20_000 - 1).to_bytes(3, "little") + (20_000 - 1).to_bytes(3, "little")
    cases.update(gif_screen_60000=(bytes(gif), (60_000, 60_000)),  # names end in a size
                 bmp_100000=(bytes(bmp), (100_000, 100_000)),
                 webp_vp8x_20000=(vp8x, (20_000, 20_000)),
                 png_12000=(png(12_000, 12_000), (12_000, 12_000)))
    return cases


def test_header_sizes_are_read_without_decoding():
    cases = header_cases()
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        data = tf.compat.v1.placeholder(tf.string, [])
        size = useModel.header_size(data)
        for name, (blob, expected) in cases.items():
            assert tuple(session.run(size, {data: blob})) == expected, name
            if not name[-1].isdigit():  # Pillow agrees on the real files
                with Image.open(io.BytesIO(blob)) as image:
                    assert (image.height, image.width) == expected, name
        assert tuple(session.run(size, {data: b"not an image"})) == (-1, -1)


def test_the_served_graph_refuses_oversized_headers_before_decoding():
    cases = header_cases()
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        data = tf.compat.v1.placeholder(tf.string, [])
        image = useModel.serving_preprocess(data, 32)
        for name, (blob, _) in cases.items():
            if name[-1].isdigit():  # the oversized ones
                with pytest.raises(tf.errors.InvalidArgumentError, match="pixels refused"):
                    session.run(image, {data: blob})
            else:
                assert session.run(image, {data: blob}).shape == (32, 32, 3), name
        with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG, PNG"):
            session.run(image, {data: b"GIF7 not quite"})


# ---------------------------------------------------------------------------
# Kind 4: broken JPEGs
# ---------------------------------------------------------------------------
def test_truncated_or_corrupt_jpegs_are_bad_images():
    good = encoded(noise(300, 200), quality=95)
    for broken in (cut_jpeg(good), good[:len(good) // 2], flipped_byte(good),
                   cut_jpeg(encoded(noise(300, 200), quality=90, progressive=True))):
        # Pillow alone accepts the first (grey padding) and the third.
        with pytest.raises(imagefile.BadImage, match="broken image"):
            imagefile.encode_image_bytes(broken)
    assert imagefile.encode_image_bytes(good)[0] == good  # kept byte for byte
    for fine in (encoded(noise().convert("L")), encoded(noise(), progressive=True),
                 encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0))), good + b"trailing"):
        imagefile.encode_image_bytes(fine)


# ---------------------------------------------------------------------------
# Kind 5: names that are not text
# ---------------------------------------------------------------------------
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as a Windows share or an old zip leaves them


def test_display_name_is_always_printable_utf8():
    assert imagefile.display_name("猫 咪/照片 1.JPG") == "猫 咪/照片 1.JPG"
    assert imagefile.display_name(NOT_UTF8 + ".jpg") == "caf\\xe9.jpg"
    assert imagefile.display_name("a\nb\u2028c\x1b.jpg") == "a\\nb\\u2028c\\x1b.jpg"
    imagefile.display_name(NOT_UTF8 + "\n").encode("utf-8")  # strict: no surrogate left


@pytest.mark.parametrize("name,problem", [("cats", None), ("猫 咪", None), ("a:b", None),
                                          ("two\nlines", "line break"), ("cr\r", "line break"),
                                          ("sep\u2028", "line break"), ("   ", "blank"),
                                          (NOT_UTF8, "not valid UTF-8")])
def test_class_names_that_labels_txt_cannot_hold(name, problem):
    found = FlowIO.class_name_problem(name)
    assert (found is None) if problem is None else (problem in found)


def make_tree(root, classes=("cat", "dog"), per_class=3):
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            noise(32, 32, seed=100 * index + i).save(os.path.join(folder, f"{i}.png"))
    return root


def read_filenames(data_dir):
    info = FlowIO.load_dataset_info(data_dir)
    names = []
    for shard in info["shards"]["train"] + info["shards"]["validation"]:
        for raw in tf.compat.v1.io.tf_record_iterator(os.path.join(data_dir, shard)):
            names.append(tf.train.Example.FromString(raw)
                         .features.feature["image/filename"].bytes_list.value[0])
    return sorted(names)


def strict_json(path):
    """The JSON document at path, parsed as strictly as other languages do:
    UTF-8, and no lone surrogate in any string."""
    with open(path, "rb") as f:
        document = json.loads(f.read().decode("utf-8"))
    json.dumps(document, ensure_ascii=False).encode("utf-8")
    return document


def test_a_file_name_that_is_not_utf8_keeps_its_bytes(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    os.rename(os.path.join(image_dir, "cat", "0.png"),
              os.path.join(image_dir, "cat", NOT_UTF8 + ".png"))
    with open(os.path.join(image_dir, "dog", NOT_UTF8 + ".txt"), "w") as f:
        f.write("not an image, and a name that is not text")
    FlowIO.convert(image_dir, str(tmp_path / "out"), validation_ratio=0, workers=1)
    assert b"cat/caf\xe9.png" in read_filenames(str(tmp_path / "out"))
    info = strict_json(tmp_path / "out" / FlowIO.DATASET_FILE)
    assert [entry["path"] for entry in info["skipped"]] == [
        os.path.join(image_dir, "dog", "caf\\xe9.txt")]


@pytest.mark.parametrize("bad", ["two\nlines", NOT_UTF8, " "])
def test_a_class_name_labels_txt_cannot_hold_is_refused_before_anything_is_written(tmp_path, bad):
    image_dir = make_tree(str(tmp_path / "images"), classes=("cat", bad))
    with pytest.raises(cli.UserError, match="labels.txt cannot hold") as error:
        FlowIO.convert(image_dir, str(tmp_path / "out"), workers=1)
    assert "\n" not in str(error.value)
    str(error.value).encode("utf-8")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# Kind 6: FlowIO never deletes what it did not write
# ---------------------------------------------------------------------------
USER_FILES = {"train-imagenet-00000-of-01024.tfrecord": b"someone's shard",
              "validation-coco.tfrecord": b"another", "notes.txt": b"mine"}


def write_files(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def contents(folder):
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))}


def test_a_folder_flowio_did_not_write_is_refused_untouched(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    write_files(out, dict(USER_FILES, **{"labels.txt": b"0:hand-written\n"}))
    with pytest.raises(cli.UserError, match="not FlowIO.py's output.*--overwrite"):
        FlowIO.convert(image_dir, out, workers=1)
    assert sorted(os.listdir(out)) == sorted(list(USER_FILES) + ["labels.txt"])  # not even a lock


def test_overwrite_replaces_only_the_files_flowio_writes(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    write_files(out, USER_FILES)
    FlowIO.convert(image_dir, out, workers=1, overwrite=True)
    after = contents(out)
    assert {name: after[name] for name in USER_FILES} == USER_FILES
    # From now on the folder is FlowIO's: a re-run needs no --overwrite, and
    # removes its own older shards but still nothing of the user's.
    FlowIO.convert(image_dir, out, workers=1, num_shards=2)
    info = FlowIO.load_dataset_info(out)
    assert sorted(os.listdir(out)) == sorted(
        list(USER_FILES) + [FlowIO.LOCK_FILE, "labels.txt", "dataset.json"]
        + info["shards"]["train"] + info["shards"]["validation"])


def test_an_edited_report_cannot_make_flowio_delete_other_files(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    FlowIO.convert(image_dir, out, workers=1)
    write_files(str(tmp_path), {"victim.txt": b"keep me"})
    report = os.path.join(out, FlowIO.DATASET_FILE)
    info = FlowIO.load_dataset_info(out)
    info["shards"]["train"].append("../victim.txt")
    with open(report, "w", encoding="utf-8") as f:
        json.dump(info, f)
    with pytest.raises(cli.UserError, match="dataset.json is not a FlowIO.py report"):
        FlowIO.convert(image_dir, out, workers=1)
    FlowIO.convert(image_dir, out, workers=1, overwrite=True)
    assert (tmp_path / "victim.txt").read_bytes() == b"keep me"


def test_a_run_killed_while_swapping_files_is_still_recognised(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    FlowIO.convert(image_dir, out, workers=1, num_shards=2)
    old = FlowIO.load_dataset_info(out)["shards"]
    # What a run killed between its first and last rename leaves: the journal,
    # no dataset.json.
    with open(os.path.join(out, FlowIO.JOURNAL_FILE), "w", encoding="utf-8") as f:
        json.dump({"files": sorted(old["train"] + old["validation"]
                                   + ["labels.txt", "dataset.json"])}, f)
    os.remove(os.path.join(out, FlowIO.DATASET_FILE))
    FlowIO.convert(image_dir, out, workers=1, num_shards=1)
    info = FlowIO.load_dataset_info(out)
    assert sorted(os.listdir(out)) == sorted(
        [FlowIO.LOCK_FILE, "labels.txt", "dataset.json"]
        + info["shards"]["train"] + info["shards"]["validation"])


# ---------------------------------------------------------------------------
# Kind 7 (FlowIO): one run per output folder
# ---------------------------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_refused_and_touches_nothing(tmp_path):
    image_dir = make_tree(str(tmp_path / "images"))
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, ".flowio-tmp-live"))  # the running one's temporary folder
    # The lock a running FlowIO holds: flock() on another open file of the
    # same path conflicts even within one process.
    with FlowIO._lock_output_dir(out):
        with pytest.raises(cli.UserError,
                           match=f"another FlowIO.py run \\(process {os.getpid()}\\)"):
            FlowIO.convert(image_dir, out, workers=1)
        assert os.path.isdir(os.path.join(out, ".flowio-tmp-live"))
    # Once it has ended, its leftovers are a dead run's, and removed.
    FlowIO.convert(image_dir, out, workers=1)
    assert not os.path.exists(os.path.join(out, ".flowio-tmp-live"))
