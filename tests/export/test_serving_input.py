"""suite/export/serving_input.py: image sizes read from headers without
decoding, and the served graph's image-size rule, the same as the files'."""
import io
import struct

import pytest
import tensorflow as tf
from PIL import Image

from helpers import encoded, noise, png
from suite.export import serving_input


SIZES = [  # (width, height, why refused or None)
    (8000, 8000, None), (1, 1, None), (400, 20, None), (20, 400, None),
    (421, 20, "too thin"), (60_000, 1, "too thin"), (70_000, 1, "too large"),
    (1, 70_000, "too large"), (12_000, 12_000, "too large"), (8001, 8000, "too large"),
    (65_501, 65_501, "too large"), (2**32 - 1, 2**32 - 1, "too large"), (0, 10, "no pixels"),
]


def test_the_served_graph_applies_the_same_rule():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        sizes = tf.compat.v1.placeholder(tf.int64, [2])
        allowed = serving_input.size_is_allowed(sizes[1], sizes[0])
        for width, height, why in SIZES:
            assert session.run(allowed, {sizes: [width, height]}) == (why is None), (width, height)


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
        size = serving_input.header_size(data)
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
        image = serving_input.serving_preprocess(data, 32)
        for name, (blob, _) in cases.items():
            if name[-1].isdigit():  # the oversized ones
                with pytest.raises(tf.errors.InvalidArgumentError, match="pixels refused"):
                    session.run(image, {data: blob})
            else:
                assert session.run(image, {data: blob}).shape == (32, 32, 3), name
        with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG, PNG"):
            session.run(image, {data: b"GIF7 not quite"})
