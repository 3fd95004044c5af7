"""FlowIO.py as a user runs it: a messy tree of real files converted, and the
output folder kept safe from a second run, a full disk and a read-only folder."""
import collections
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import (NOT_UTF8, REPO, cut_jpeg, make_tree, noise, one_error_line, png, run_script,
                     strict_json)
from suite.data import contract, convert, output_dir, pipeline
from suite.images import decoding, finding
from suite.plumbing import names
from suite.preprocessing import evaluation as eval_preprocessing


RNG = np.random.default_rng(42)


def messy_noise(size=(24, 32), colour=None):
    """A distinct RGB image (random noise, optionally around a colour)."""
    h, w = size
    base = np.array(colour if colour else (128, 128, 128))
    return Image.fromarray(np.clip(base + RNG.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


def save(image, path, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def png_header_only(width, height):
    """A PNG that claims width x height pixels: Pillow must refuse it before
    allocating anything."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def build_messy_tree(root):
    """Every image-folder case of the README's robustness table. Returns
    (expected {class: sorted relative filenames in the records}, expected reported paths)."""
    p = lambda *parts: os.path.join(root, *parts)
    # cats: plain JPEG, capital extension, a sub-folder, broken files, clutter.
    save(messy_noise(), p("cats", "a.jpg"), quality=90)
    with open(p("cats", "a.jpg"), "rb") as f:
        write_bytes(p("cats", "zz_copy.jpg"), f.read())           # duplicate of a.jpg
    save(messy_noise(), p("cats", "UPPER.JPG"))
    save(messy_noise(), p("cats", "sub", "deeper.png"))
    write_bytes(p("cats", "empty.jpg"), b"")
    write_bytes(p("cats", "text.jpg"), b"this is not a picture\n" * 10)
    write_bytes(p("cats", "page.png"), b"<html><body>404 Not Found</body></html>")
    write_bytes(p("cats", "README.txt"), b"photos of cats")
    buffer = io.BytesIO()
    messy_noise((200, 200)).save(buffer, "JPEG", quality=95)
    write_bytes(p("cats", "truncated.jpg"), buffer.getvalue()[: len(buffer.getvalue()) // 2])
    write_bytes(p("cats", ".DS_Store"), b"\x00\x00\x00\x01Bud1")
    write_bytes(p("cats", "Thumbs.db"), b"\xd0\xcf\x11\xe0")
    save(messy_noise(), p("cats", ".hidden", "secret.png"))
    # dogs: every colour mode and container.
    save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), p("dogs", "cmyk.jpg"), quality=95)
    gray16 = Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16))
    assert gray16.mode.startswith("I")
    save(gray16, p("dogs", "gray16.png"))
    palette = messy_noise((16, 16)).convert("P", palette=Image.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    save(palette, p("dogs", "palette.png"), transparency=0)
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)                                  # left half opaque blue
    save(Image.fromarray(rgba), p("dogs", "rgba.png"))              # right half transparent
    save(messy_noise().convert("LA"), p("dogs", "la.png"))
    save(messy_noise().convert("L"), p("dogs", "gray.png"))
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    frames[0].save(p("dogs", "anim.gif"), save_all=True, append_images=frames[1:], duration=100)
    rotated = messy_noise((20, 40))                                        # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6                                                 # rotate 90 on display
    save(rotated, p("dogs", "rotated.jpg"), exif=exif.tobytes())
    save(messy_noise(), p("dogs", "pic.webp"))
    save(messy_noise(), p("dogs", "pic.tiff"))
    save(messy_noise(), p("dogs", "pic.bmp"))
    save(messy_noise(), p("dogs", "png_named.jpg"), format="PNG")
    write_bytes(p("dogs", "huge.png"), png_header_only(20000, 20000))
    os.symlink("..", p("dogs", "loop"))                              # a symlink loop
    # The same picture in two classes: a labelling error.
    save(messy_noise(), p("cats", "conflict.png"))
    with open(p("cats", "conflict.png"), "rb") as f:
        write_bytes(p("dogs", "conflict.png"), f.read())
    # Not classes: an empty folder and one with only broken files.
    os.makedirs(p("empty_class"))
    write_bytes(p("broken_class", "bad.jpg"), b"GIF89a garbage")
    # A Chinese class name with spaces, a capitalised extension.
    save(messy_noise(), p("猫 咪", "照片 1.JPG"))
    save(messy_noise(), p("猫 咪", "照片 2.png"))
    # A file outside any class folder.
    write_bytes(p("notes.txt"), b"where the photos came from")
    # Hostile files: what is not a regular file (never opened: a pipe would
    # hang the run), sizes that cost memory or break the JPEG re-encode, a JPEG
    # cut in half with its end marker appended (Pillow pads it grey), and
    # names that are not UTF-8 (the usable one lands, under its own bytes).
    os.mkfifo(p("cats", "pipe.jpg"))
    os.symlink(p("cats", "pipe.jpg"), p("cats", "link_to_pipe.jpg"))
    os.symlink("/dev/zero", p("cats", "link_to_device.jpg"))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(p("cats", "socket.jpg"))
    write_bytes(p("cats", "wide.png"), png(70_000, 1))
    write_bytes(p("cats", "thin.png"), png(60_000, 1))
    buffer = io.BytesIO()
    messy_noise((200, 200)).save(buffer, "JPEG", quality=95)
    write_bytes(p("cats", "cut.jpg"), cut_jpeg(buffer.getvalue()))
    save(messy_noise(), p("dogs", NOT_UTF8 + ".png"))
    write_bytes(p("dogs", NOT_UTF8 + "\n.jpg"), b"not an image")

    expected = {
        "cats": sorted(["a.jpg", "UPPER.JPG", os.path.join("sub", "deeper.png")]),
        "dogs": sorted(["cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "la.png",
                        "gray.png", "anim.gif", "rotated.jpg", "pic.webp", "pic.tiff",
                        "pic.bmp", "png_named.jpg", NOT_UTF8 + ".png"]),
        "猫 咪": sorted(["照片 1.JPG", "照片 2.png"]),
    }
    reported = {p("cats", f) for f in ("zz_copy.jpg", "empty.jpg", "text.jpg", "page.png",
                                       "README.txt", "truncated.jpg", "conflict.png")}
    reported |= {p("dogs", "huge.png"), p("dogs", "conflict.png"), p("dogs", "loop"),
                 p("broken_class", "bad.jpg"), p("notes.txt"), p("dogs", NOT_UTF8 + "\n.jpg")}
    reported |= {p("cats", f) for f in ("pipe.jpg", "link_to_pipe.jpg", "link_to_device.jpg",
                                       "socket.jpg", "wide.png", "thin.png", "cut.jpg")}
    return expected, reported


def read_records(data_dir, info):
    """{split: [(class name, filename, decoded RGB array, height, width)]}."""
    records = {}
    for split, shards in info["shards"].items():
        records[split] = []
        for shard in shards:
            for raw in tf.compat.v1.io.tf_record_iterator(os.path.join(data_dir, shard)):
                f = tf.train.Example.FromString(raw).features.feature
                encoded = f["image/encoded"].bytes_list.value[0]
                records[split].append((
                    info["classes"][f["image/class/label"].int64_list.value[0]],
                    os.fsdecode(f["image/filename"].bytes_list.value[0]),  # any bytes
                    np.asarray(Image.open(io.BytesIO(encoded))),
                    f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0]))
                assert f["image/format"].bytes_list.value[0] == b"jpeg"
    return records


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    image_dir, data_dir = str(root / "images"), str(root / "records")
    expected, reported = build_messy_tree(image_dir)
    # A pipe opened for reading would hang the run: the timeout ends the test.
    result = run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", data_dir,
                        "--validation_ratio", "0.34", "--workers", "2", timeout=120)
    info = strict_json(os.path.join(data_dir, "dataset.json"))  # valid UTF-8 whatever the names
    return dict(image_dir=image_dir, data_dir=data_dir, expected=expected, reported=reported,
                info=info, records=read_records(data_dir, info), stdout=result.stdout)


@pytest.mark.slow
def test_exactly_the_usable_files_land_under_their_class(messy):
    landed = {}
    for split_records in messy["records"].values():
        for class_name, filename, *_ in split_records:
            landed.setdefault(class_name, []).append(filename)
    # image/filename is the path relative to --image_dir.
    assert {k: sorted(v) for k, v in landed.items()} == {
        k: sorted(os.path.join(k, f) for f in v) for k, v in messy["expected"].items()}
    assert messy["info"]["classes"] == sorted(messy["expected"])


@pytest.mark.slow
def test_every_unusable_file_is_reported_with_a_reason(messy):
    skipped = {entry["path"]: entry["reason"] for entry in messy["info"]["skipped"]}
    # Reported as names.display_name writes them: ordinary names unchanged.
    assert set(skipped) == {names.display_name(path) for path in messy["reported"]}
    p = lambda *parts: names.display_name(os.path.join(messy["image_dir"], *parts))
    assert skipped[p("cats", "empty.jpg")] == "empty file"
    assert "not an image" in skipped[p("cats", "text.jpg")]
    assert "broken image" in skipped[p("cats", "truncated.jpg")]
    assert "too large" in skipped[p("dogs", "huge.png")]
    assert "duplicate of" in skipped[p("cats", "zz_copy.jpg")]
    assert "cats, dogs" in skipped[p("dogs", "conflict.png")]
    assert "class folder" in skipped[p("notes.txt")]
    assert skipped[p("dogs", "loop")] == finding.LINK_TO_ANCESTOR
    for name in ("pipe.jpg", "link_to_pipe.jpg"):
        assert skipped[p("cats", name)] == "not a regular file (a named pipe): not read"
    assert "(a character device)" in skipped[p("cats", "link_to_device.jpg")]
    assert "(a socket)" in skipped[p("cats", "socket.jpg")]
    assert "a side over 65,500" in skipped[p("cats", "wide.png")]
    assert "too thin" in skipped[p("cats", "thin.png")]
    assert "premature end of data segment" in skipped[p("cats", "cut.jpg")]
    assert p("dogs", "caf\\xe9\\n.jpg") in skipped  # one escaped line, not two
    assert messy["info"]["empty_classes"] == ["broken_class", "empty_class"]
    assert messy["info"]["label_conflicts"][0]["classes"] == ["cats", "dogs"]
    assert messy["info"]["duplicates"] == [{"path": p("cats", "zz_copy.jpg"),
                                            "duplicate_of": p("cats", "a.jpg")}]
    # The printed report counts them by kind of reason, with a few of each.
    assert f"skipped {len(skipped)} file(s), by reason" in messy["stdout"]
    kinds = collections.Counter(convert.reason_kind(reason) for reason in skipped.values())
    for kind, count in kinds.items():
        assert f"  {count:7d}  {kind}: " in messy["stdout"]


@pytest.mark.slow
def test_images_are_normalised_to_upright_8_bit_rgb(messy):
    stored = {os.path.basename(name): (pixels, h, w) for records in messy["records"].values()
              for _, name, pixels, h, w in records}
    for name, (pixels, h, w) in stored.items():
        assert pixels.shape == (h, w, 3), name
    red, green, blue = stored["cmyk.jpg"][0].reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60                 # CMYK red stays red
    assert abs(stored["gray16.png"][0].mean() - 128) < 3          # scaled, not clipped to 255
    rgba = stored["rgba.png"][0].astype(int)
    assert rgba[:, :6, 2].mean() > 200 and rgba[:, :6, 0].mean() < 60   # opaque blue
    assert rgba[:, 10:].min() > 240                                # transparent -> white
    assert stored["anim.gif"][0][..., 0].mean() > 200              # first frame (red)
    assert stored["rotated.jpg"][1:] == (40, 20)                   # EXIF applied: now upright


@pytest.mark.slow
def test_split_is_stratified_and_labels_are_utf8(messy):
    info = messy["info"]
    for name, counts in info["counts"].items():
        assert counts["validation"] >= 1 and counts["train"] >= 1, name
        assert counts["train"] + counts["validation"] == len(messy["expected"][name])
    with open(os.path.join(messy["data_dir"], "labels.txt"), encoding="utf-8") as f:
        assert f.read() == "0:cats\n1:dogs\n2:猫 咪\n"
    assert contract.read_labels(os.path.join(messy["data_dir"], "labels.txt"))[2] == "猫 咪"


@pytest.mark.slow
def test_prediction_preprocessing_equals_evaluation_pipeline(messy):
    """useModel encodes a file with decoding.encode_image_file and feeds the bytes
    to preprocess_for_eval: identical to what evaluation reads from the records."""
    dataset = pipeline.make_dataset(messy["data_dir"], "train", 32, 4, training=False)
    compared = 0
    for images, _, filenames in dataset:
        for image, filename in zip(images.numpy(), filenames.numpy()):
            path = os.path.join(messy["image_dir"], os.fsdecode(filename))  # any bytes
            encoded, _, _ = decoding.encode_image_file(path)
            np.testing.assert_array_equal(
                eval_preprocessing.preprocess_for_eval(encoded, 32).numpy(), image)
            compared += 1
    assert compared == messy["info"]["num_examples"]["train"]


@pytest.mark.slow
def test_rerun_replaces_output_and_is_deterministic(messy, tmp_path):
    data_dir = str(tmp_path / "out")
    args = ("--image_dir", messy["image_dir"], "--output_dir", data_dir, "--validation_ratio",
            "0.34")
    run_script("FlowIO.py", *args)
    os.makedirs(os.path.join(data_dir, ".flowio-tmp-killed"))       # left by a killed run
    with open(os.path.join(data_dir, "dataset.json"), encoding="utf-8") as f:
        first = json.load(f)
    run_script("FlowIO.py", *args, "--num_shards", "2")
    with open(os.path.join(data_dir, "dataset.json"), encoding="utf-8") as f:
        second = json.load(f)
    assert second["fingerprint"] == first["fingerprint"] == messy["info"]["fingerprint"]
    # The old shards went, the killed run's temporary folder too; the lock file stays.
    assert sorted(os.listdir(data_dir)) == sorted(
        [output_dir.LOCK_FILE, "dataset.json", "labels.txt"] + second["shards"]["train"]
        + second["shards"]["validation"])
    records = read_records(data_dir, second)
    assert sum(len(r) for r in records.values()) == sum(len(v) for v in messy["expected"].values())


@pytest.mark.slow
def test_validation_ratio_zero_and_separate_validation_dir(tmp_path):
    from helpers import make_colour_images
    train_dir = make_colour_images(str(tmp_path / "train"), per_class=4)
    val_dir = make_colour_images(str(tmp_path / "val"), per_class=2, seed=7)
    run_script("FlowIO.py", "--image_dir", train_dir, "--output_dir", str(tmp_path / "a"),
               "--validation_ratio", "0")
    info = contract.load_dataset_info(str(tmp_path / "a"))
    assert info["num_examples"] == {"train": 12, "validation": 0}
    run_script("FlowIO.py", "--image_dir", train_dir, "--output_dir", str(tmp_path / "b"),
               "--validation_dir", val_dir)
    info = contract.load_dataset_info(str(tmp_path / "b"))
    assert info["num_examples"] == {"train": 12, "validation": 6}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "empty", "one_class", "unwritable"])
def test_bad_arguments_give_one_clear_line(tmp_path, case):
    image_dir, output_dir = tmp_path / "images", tmp_path / "out"
    if case != "missing":
        image_dir.mkdir()
    if case == "one_class":
        save(messy_noise(), str(image_dir / "only" / "a.png"))
        save(messy_noise(), str(image_dir / "only" / "b.png"))
    if case == "unwritable":
        for name in ("x", "y"):
            save(messy_noise(), str(image_dir / name / "a.png"))
        (tmp_path / "file").write_text("a file, not a folder")
        output_dir = tmp_path / "file" / "out"
    result = run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", output_dir,
                        check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert str(image_dir if case != "unwritable" else output_dir) in lines[0]


def flowio(image_dir, output_dir, *args, **popen):
    result = run_script("FlowIO.py", "--image_dir", image_dir, "--output_dir", output_dir,
                        *args, check=False, timeout=120, **popen)
    return result


def snapshot(folder):
    """{relative path: bytes} of every file under folder but the lock file
    (which holds the pid of the last run that took it)."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == output_dir.LOCK_FILE:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


@pytest.mark.slow
def test_a_second_flowio_run_is_refused_in_one_line(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    convert.convert(image_dir, out, workers=1)
    os.makedirs(os.path.join(out, ".flowio-tmp-running"))
    before = snapshot(out)
    with output_dir.lock(out):  # as the running FlowIO.py holds it
        result = flowio(image_dir, out)
        one_error_line(result, f"FlowIO.py (pid {os.getpid()}) is writing", out)
    assert snapshot(out) == before  # and its temporary folder was left alone
    assert os.path.isdir(os.path.join(out, ".flowio-tmp-running"))


@pytest.mark.slow
def test_the_lock_ends_with_the_process_that_held_it(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    os.makedirs(out)
    # A process that takes the lock as FlowIO does, then is killed.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({os.path.join(out, output_dir.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(Exception, match="another process is writing"):
            convert.convert(image_dir, out, workers=1)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    convert.convert(image_dir, out, workers=1)  # no stale lock to clear by hand


@pytest.mark.slow
@pytest.mark.parametrize("case", ["foreign", "class_names"])
def test_flowio_refuses_before_writing_anything(tmp_path, case):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    if case == "foreign":
        os.makedirs(out)
        for name in ("train-imagenet-00000-of-01024.tfrecord", "validation-coco.tfrecord",
                     "labels.txt"):
            (tmp_path / "out" / name).write_bytes(b"the user's")
        before = snapshot(out)
        one_error_line(flowio(image_dir, out), out, "not FlowIO.py's output", "--overwrite")
        assert snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)
    else:
        for bad in ("two\nlines", NOT_UTF8):
            os.makedirs(os.path.join(image_dir, bad))
            noise(seed=7).save(os.path.join(image_dir, bad, "a.png"))
        one_error_line(flowio(image_dir, out), "labels.txt cannot hold",
                        "'two\\nlines' contains a line break", "'caf\\xe9' is not valid UTF-8")
        assert not os.path.exists(out)


def limit_file_size(limit):
    """preexec_fn: files this process writes stop at `limit` bytes (EFBIG),
    as on a full disk; SIGXFSZ ignored so the write fails instead of killing."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def assert_previous_output_intact(out, before):
    assert snapshot(out) == before
    assert not [name for name in os.listdir(out) if name.startswith(".flowio-tmp-")]


@pytest.mark.slow
@pytest.mark.parametrize("fails_at", ["staging", "shard"])
def test_a_full_disk_is_one_line_and_the_previous_output_stays(tmp_path, fails_at):
    image_dir, out = make_tree(str(tmp_path / "images"), per_class=20), str(tmp_path / "out")
    convert.convert(image_dir, out, validation_ratio=0, num_shards=1, workers=1)
    before = snapshot(out)
    [shard] = contract.load_dataset_info(out)["shards"]["train"]
    # Staging holds the images alone; the shard adds ~100 bytes a record.
    limit = 2000 if fails_at == "staging" else len(before[shard]) - 1500
    result = flowio(image_dir, out, "--validation_ratio", "0", "--num_shards", "1",
                    "--workers", "1", "--seed", "5", preexec_fn=limit_file_size(limit))
    one_error_line(result, f"cannot write to --output_dir {out}", "File too large")
    assert_previous_output_intact(out, before)


@pytest.mark.slow
def test_a_read_only_output_dir_is_one_line(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path} {tmp_path}"],
            capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here to mount a folder read-only")
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    convert.convert(image_dir, out, workers=1)
    before = snapshot(out)
    # FlowIO.py in a mount namespace where `out` is a read-only bind mount.
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && shift && exec "$@"',
         out, "ignored", sys.executable, os.path.join(REPO, "FlowIO.py"),
         "--image_dir", image_dir, "--output_dir", out, "--seed", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    one_error_line(result, f"cannot write to --output_dir {out}", "Read-only file system")
    assert_previous_output_intact(out, before)


@pytest.mark.slow
def test_many_unusable_files_are_a_summary_and_a_loop_link_is_one_entry(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    for i in range(3000):
        open(os.path.join(image_dir, "cat", f"empty{i}.jpg"), "wb").close()
    os.symlink(".", os.path.join(image_dir, "self"))
    result = flowio(image_dir, out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 12, result.stdout  # not one line per file
    assert f"skipped 3001 file(s), by reason (each one with its reason: {out}/dataset.json" in (
        result.stdout)
    assert any(line.startswith("     3000  empty file: ") and line.endswith(" and 2997 more")
               for line in lines), result.stdout
    assert f"        1  a link to a folder that holds it: {image_dir}/self" in lines
    info = contract.load_dataset_info(out)
    assert len(info["skipped"]) == 3001 and info["classes"] == ["cat", "dog"]
    assert info["num_examples"]["train"] + info["num_examples"]["validation"] == 6


@pytest.mark.slow
def test_a_lock_file_planted_as_a_link_is_one_line_and_its_target_untouched(tmp_path):
    image_dir, out = make_tree(str(tmp_path / "images")), str(tmp_path / "out")
    os.makedirs(out)
    (tmp_path / "victim").write_bytes(b"keep me")
    os.symlink(tmp_path / "victim", os.path.join(out, output_dir.LOCK_FILE))
    one_error_line(flowio(image_dir, out), os.path.join(out, output_dir.LOCK_FILE),
                   "is a symbolic link", "remove it")
    assert (tmp_path / "victim").read_bytes() == b"keep me"
