"""suite/images/inputs.py: every form a back-end holds an image in (bytes,
file objects, PIL images, numpy arrays) gives its file's stored bytes, under
the same rules as its path."""
import io
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from helpers import cut_jpeg, encoded, no_hang, noise, png
from suite.images import decoding, inputs


def image_files(folder):
    """One file of each kind encode_image treats differently, written for
    real: {name: path}. An upright RGB JPEG is kept byte for byte; the others
    are decoded, turned, converted and stored again."""
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: rotate 90 on display
    rgba = noise(40, 30).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((40, 30)))
    images = {"upright.jpg": encoded(noise(48, 32), quality=90),
              "rotated.jpg": encoded(noise(48, 32), quality=90, exif=rotated.tobytes()),
              "alpha.png": encoded(rgba, "PNG"),
              "gray16.png": encoded(Image.fromarray(
                  (np.arange(24 * 16, dtype=np.uint16) * 150).reshape(16, 24)), "PNG"),
              "cmyk.jpg": encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)))}
    for name, data in images.items():
        (folder / name).write_bytes(data)
    return {name: str(folder / name) for name in images}


def forms_of(path):
    """The forms of one file's image that must give its stored bytes exactly:
    {form: image}."""
    with open(path, "rb") as f:
        data = f.read()
    return {"str": path, "pathlib": pathlib.Path(path), "bytes": data,
            "bytearray": bytearray(data), "memoryview": memoryview(data),
            "open file": open(path, "rb"), "unbuffered file": open(path, "rb", buffering=0),
            "BytesIO": io.BytesIO(data), "PIL image opened": Image.open(path),
            "PIL image from BytesIO": Image.open(io.BytesIO(data)),
            "PIL image from an unbuffered file": Image.open(open(path, "rb", buffering=0))}


def test_every_form_of_a_file_gives_its_stored_bytes(tmp_path):
    for name, path in image_files(tmp_path).items():
        stored = decoding.encode_image_file(path)
        for form, image in forms_of(path).items():
            assert inputs.encode_image(image) == stored, (name, form)
            if hasattr(image, "close"):
                image.close()
        assert inputs.encode_image(path, max_side=20) == inputs.encode_image(
            Image.open(path), max_side=20)
        # Decoded pixels: stored again, as the file is where it is not kept.
        loaded = Image.open(path)
        loaded.load()
        if name != "upright.jpg":
            assert inputs.encode_image(loaded) == stored, name
    # An upright JPEG's pixels are stored again at JPEG_QUALITY: near, not the same bytes.
    upright = image_files(tmp_path)["upright.jpg"]
    again = inputs.encode_image(np.asarray(Image.open(upright)))[0]
    assert again != decoding.encode_image_file(upright)[0]
    assert inputs.encode_image(again)[0] == again  # and then kept


def test_pixels_give_the_bytes_of_the_same_pixels_in_a_file(tmp_path):
    pixels = np.asarray(noise(50, 30))
    Image.fromarray(pixels).save(tmp_path / "pixels.png")
    stored = decoding.encode_image_file(str(tmp_path / "pixels.png"))
    assert inputs.encode_image(pixels) == stored
    assert inputs.encode_image(pixels[:, ::-1][:, ::-1]) == stored  # strided: still its pixels
    image = Image.fromarray(pixels)
    assert inputs.encode_image(image) == stored
    # The caller's image is not changed, even when it is shrunk to max_side.
    assert inputs.encode_image(image, max_side=10)[1:] == (6, 10)
    assert image.size == (50, 30) and np.array_equal(np.asarray(image), pixels)
    # HxW uint8 is gray, as a grayscale file is.
    gray = pixels[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert inputs.encode_image(gray) == decoding.encode_image_file(str(tmp_path / "gray.png"))


def test_an_unloaded_pil_image_gets_the_strict_jpeg_check():
    broken = cut_jpeg(encoded(noise(300, 200), quality=95))
    Image.open(io.BytesIO(broken)).load()  # Pillow alone accepts it, padded grey
    with pytest.raises(decoding.BadImage, match="broken image"):
        inputs.encode_image(Image.open(io.BytesIO(broken)))


@pytest.mark.parametrize("form", ["bytes", "file object", "PIL image"])
@pytest.mark.parametrize("width,height,why", [(8001, 8000, "too large"),
                                              (70_000, 1, "too large"), (60_000, 1, "too thin")])
def test_the_image_size_rule_holds_for_every_form(form, width, height, why):
    data = png(width, height)
    image = {"bytes": data, "file object": io.BytesIO(data),
             "PIL image": Image.open(io.BytesIO(data))}[form]
    with pytest.raises(decoding.BadImage, match=why):
        inputs.encode_image(image)


ARRAYS = [  # (array, why refused)
    (np.zeros((8, 8, 3), np.float32), "of float32: give uint8"),
    (np.zeros((8, 8, 3), np.int64), "of int64: give uint8"),
    (np.zeros((8, 8, 3), bool), "of bool: give uint8"),
    (np.zeros((8, 8, 4), np.uint8), "4 channels"),
    (np.zeros((8, 8, 1), np.uint8), r"shape \(8, 8, 1\)"),
    (np.zeros(8, np.uint8), r"shape \(8,\)"),
    (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(2, 8, 8, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
    (np.zeros((1, 60_000), np.uint8), "too thin"),
    (np.array([["a"]], dtype=object), "of object"),
]


@pytest.mark.parametrize("array,why", ARRAYS)
def test_arrays_other_than_uint8_rgb_or_gray_are_refused(array, why):
    with pytest.raises(decoding.BadImage, match=why):
        inputs.encode_image(array)


class FailingUpload(io.RawIOBase):
    """A back-end's upload stream whose client went away mid-read."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise ConnectionResetError("the client went away")


class EndlessStream(io.RawIOBase):
    """A stream that never ends (a device, a client that never stops)."""

    def readable(self):
        return True

    def readinto(self, buffer):
        buffer[:] = b"\0" * len(buffer)
        return len(buffer)


def test_file_objects_that_cannot_give_an_image_each_say_why(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    path.write_bytes(encoded(noise(), "PNG"))
    closed = open(path, "rb")
    closed.close()
    at_end = open(path, "rb")
    at_end.read()
    with open(path, "r", encoding="latin-1") as text:
        with pytest.raises(decoding.BadImage, match="text mode: open it with 'rb'"):
            inputs.encode_image(text)
        assert text.tell() == 0  # refused unread
    for stream, why in ((closed, "a closed file object"), (at_end, "seek\\(0\\) first"),
                        (FailingUpload(), "cannot read the file object: ConnectionResetError"),
                        (io.BytesIO(b"not an image"), "not an image Pillow can read")):
        with pytest.raises(decoding.BadImage, match=why):
            inputs.encode_image(stream)
    at_end.close()
    # No stream is read past the largest image: an endless one ends in an error.
    monkeypatch.setattr(inputs, "MAX_FILE_BYTES", 100_000)
    with no_hang(), pytest.raises(decoding.BadImage, match="more than any image we accept"):
        inputs.encode_image(EndlessStream())


@pytest.mark.parametrize("item,why", [
    (3, "not an image: int"), (None, "not an image: None"), (["a.jpg"], "not an image: list"),
    (2.5, "not an image: float"), (b"", "empty bytes"), (bytearray(), "empty bytes"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image Pillow can read")])
def test_what_is_no_image_is_a_bad_image_naming_what_to_give(item, why):
    with pytest.raises(decoding.BadImage, match=why):
        inputs.encode_image(item)


def test_bytes_that_name_a_file_are_told_to_be_passed_as_a_path(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded(noise()))
    for name in (os.fsencode(path), memoryview(os.fsencode(path))):
        with pytest.raises(decoding.BadImage, match="pass the path as str"):
            inputs.encode_image(name)
    assert inputs.encode_image(os.fsdecode(os.fsencode(path)))  # as str it is read


def test_a_closed_pil_image_is_a_bad_image(tmp_path):
    for loaded in (False, True):
        image = Image.fromarray(np.asarray(noise())) if loaded else Image.open(
            io.BytesIO(encoded(noise(), "PNG")))
        image.close()
        with pytest.raises(decoding.BadImage, match="Operation on closed image"):
            inputs.encode_image(image)
