"""suite/images/decoding.py, on hostile files built for real: what is not a
regular file is refused unread, reads are bounded by size, the image-size
rule, oversized PNGs and broken JPEGs are BadImages, never crashes."""
import os
import socket

import pytest
from PIL import Image

from helpers import cut_jpeg, encoded, flipped_byte, no_hang, noise, png
from suite.images import decoding


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


def test_what_is_not_a_regular_file_is_refused_unread(tmp_path):
    paths, server = special_files(str(tmp_path))
    expected = {"pipe": "a named pipe", "link_to_pipe": "a named pipe", "socket": "a socket",
                "device": "a character device", "folder": "a folder"}
    with server, no_hang():
        for name, kind in expected.items():
            with pytest.raises(decoding.BadImage, match=f"not a regular file \\({kind}\\)"):
                decoding.read_image_file(paths[name])
    # Nobody ever opened the pipe for reading: a writer finds no reader.
    with pytest.raises(OSError):
        os.open(paths["pipe"], os.O_WRONLY | os.O_NONBLOCK)
    # A link to a regular file is that file.
    (tmp_path / "image.jpg").write_bytes(encoded(noise()))
    os.symlink(tmp_path / "image.jpg", tmp_path / "link.jpg")
    assert decoding.read_image_file(str(tmp_path / "link.jpg")) == encoded(noise())


def test_a_file_larger_than_any_image_is_refused_without_reading_it(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:  # sparse: no disk used, and nothing to read
        f.truncate(decoding.MAX_FILE_BYTES + 1)
    with pytest.raises(decoding.BadImage, match="more than any image we accept"):
        decoding.read_image_file(str(huge))


SIZES = [  # (width, height, why refused or None)
    (8000, 8000, None), (1, 1, None), (400, 20, None), (20, 400, None),
    (421, 20, "too thin"), (60_000, 1, "too thin"), (70_000, 1, "too large"),
    (1, 70_000, "too large"), (12_000, 12_000, "too large"), (8001, 8000, "too large"),
    (65_501, 65_501, "too large"), (2**32 - 1, 2**32 - 1, "too large"), (0, 10, "no pixels"),
]


@pytest.mark.parametrize("width,height,why", SIZES)
def test_the_image_size_rule(width, height, why):
    problem = decoding.size_problem(width, height)
    assert (problem is None) if why is None else (why in problem)


@pytest.mark.parametrize("width,height,why", [(70_000, 1, "too large"), (60_000, 1, "too thin"),
                                              (12_000, 12_000, "too large")])
def test_an_oversized_png_is_one_bad_image_not_a_crash(width, height, why):
    # 1 x 70,000 is wider than JPEG's 65,500: it used to fail in the re-encode,
    # outside the per-file error path, and end the whole run.
    with pytest.raises(decoding.BadImage, match=why):
        decoding.encode_image_bytes(png(width, height))


def test_truncated_or_corrupt_jpegs_are_bad_images():
    good = encoded(noise(300, 200), quality=95)
    for broken in (cut_jpeg(good), good[:len(good) // 2], flipped_byte(good),
                   cut_jpeg(encoded(noise(300, 200), quality=90, progressive=True))):
        # Pillow alone accepts the first (grey padding) and the third.
        with pytest.raises(decoding.BadImage, match="broken image"):
            decoding.encode_image_bytes(broken)
    assert decoding.encode_image_bytes(good)[0] == good  # kept byte for byte
    for fine in (encoded(noise().convert("L")), encoded(noise(), progressive=True),
                 encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0))), good + b"trailing"):
        decoding.encode_image_bytes(fine)
