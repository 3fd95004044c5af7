"""What a caller may hand the Classifier as an image, besides a path: the
bytes of an upload, a binary file object, a PIL image or a numpy array. Each
becomes the stored JPEG its file would (suite.images.decoding): the same
EXIF turning, conversion and size rule, so the same probabilities."""
import io
import os
import warnings

import numpy as np
from PIL import Image

from suite.images.decoding import (MAX_FILE_BYTES, BadImage, check_size, encode_image_bytes,
                                   encode_image_file, encode_jpeg, one_image_errors,
                                   upright_rgb)

# What encode_image takes, for the error that refuses anything else.
IMAGE_INPUTS = ("a path, encoded image bytes, a file object opened in binary mode, "
                "a PIL image or an HxWx3 uint8 RGB numpy array")


def is_path(item):
    """Whether an image input is a path (str or os.PathLike); bytes are image data."""
    return isinstance(item, (str, os.PathLike))


def is_one_image(item):
    """Whether item is a single image in a form encode_image takes, as
    opposed to a list of them (a 4-D numpy array is a batch of images)."""
    return (is_path(item) or isinstance(item, (bytes, bytearray, memoryview, Image.Image))
            or (isinstance(item, np.ndarray) and item.ndim != 4)
            or callable(getattr(item, "read", None)))


def _names_a_file(data):
    """Whether bytes that are no image are a file's name (a bytes path)."""
    return len(data) < 4096 and b"\0" not in data and os.path.isfile(data)


def _checked_length(data):
    if len(data) > MAX_FILE_BYTES:
        raise BadImage(f"{len(data):,} bytes, more than any image we accept "
                       f"({MAX_FILE_BYTES:,}): shrink it first")
    return data


def read_file_object(stream):
    """The bytes of a binary file object from where it stands to its end, at
    most MAX_FILE_BYTES + 1 of them (what an upload's stream or an open file
    holds). Raises BadImage: closed, text mode, unreadable, nothing left.

    Whatever its read() raises becomes the BadImage: a back-end's upload
    stream can raise its framework's own errors (a client that went away)."""
    if getattr(stream, "closed", False):
        raise BadImage("a closed file object: pass it before closing it, or pass its bytes")
    if isinstance(stream, io.TextIOBase):  # refused before reading: its data stays unread
        raise BadImage("a file object opened in text mode: open it with 'rb'")
    chunks, size = [], 0
    try:
        # read(n) may return less than n before the end (raw files, sockets).
        while size <= MAX_FILE_BYTES:
            chunk = stream.read(MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            if isinstance(chunk, str):
                raise BadImage("a file object that reads text: open it with 'rb'")
            chunks.append(bytes(chunk))
            size += len(chunk)
    except BadImage:
        raise
    except Exception as error:
        raise BadImage(f"cannot read the file object: {type(error).__name__}: {error}")
    if not size:
        raise BadImage("nothing left to read in the file object (read to its end "
                       "already? seek(0) first)")
    return _checked_length(b"".join(chunks))


def _opened_file_bytes(image):
    """The bytes of the file a PIL image was opened from (Image.open), while
    its pixels are still exactly that file's first frame: not yet loaded,
    drafted or moved to another frame. None otherwise, or when they cannot
    be read back.

    Why: classified from its file, such an image is seen exactly as that
    file's path is, the strict JPEG check and an upright JPEG kept byte for
    byte included; from its pixels it would be decoded by Pillow and stored
    again as JPEG, and Pillow accepts a truncated JPEG padded grey."""
    stream = getattr(image, "fp", None)
    if stream is None or not getattr(image, "tile", None) or image.tell() != 0:
        return None
    try:
        stream.seek(0)  # Image.open reads a file object from its start too
        data = read_file_object(stream)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
    except Exception:
        return None  # the pixels route decides, and reports what is wrong
    if (header.format, header.size, header.mode) != (image.format, image.size, image.mode):
        return None
    return data


def encode_pil_image(image, max_side=None):
    """A PIL image -> (JPEG bytes, height, width) as FlowIO would store its file.

    One opened from a file and not yet decoded is that file (read back, as its
    path would be). Any other is its pixels: the size rule first, then the
    same turning by its EXIF orientation, conversion to RGB (alpha on white)
    and max_side as a file's, and JPEG at JPEG_QUALITY. The image is not
    changed. Raises BadImage."""
    check_size(image.width, image.height)  # before anything is read or decoded
    data = _opened_file_bytes(image)
    if data is not None:
        return encode_image_bytes(data, max_side)
    # Its pixels can fail too: a closed image, a mode with no way to RGB.
    with one_image_errors(broken="unusable PIL image"):
        rgb, _ = upright_rgb(image, max_side)
    return encode_jpeg(rgb), rgb.height, rgb.width


def array_image(array):
    """An HxWx3 uint8 RGB numpy array (or HxW uint8 gray) -> a PIL image.

    Anything else is refused rather than guessed at: float pixels may be 0-1
    or 0-255, a fourth channel may be alpha or padding. (OpenCV's arrays are
    BGR: cv2.cvtColor(array, cv2.COLOR_BGR2RGB) first.) Raises BadImage."""
    if array.dtype != np.uint8:
        raise BadImage(f"a numpy array of {array.dtype}: give uint8 RGB values 0-255 "
                       f"(HxWx3)")
    if array.ndim == 3 and array.shape[2] == 4:
        raise BadImage(f"a numpy array of shape {array.shape}, 4 channels: give HxWx3 RGB "
                       f"(drop or composite the alpha channel first)")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise BadImage(f"a numpy array of shape {array.shape}: give HxWx3 RGB (or HxW gray)")
    check_size(array.shape[1], array.shape[0])
    return Image.fromarray(array)  # "RGB" or "L"


def encode_image(item, max_side=None):
    """One image in any form a back-end holds -> (JPEG bytes, height, width),
    exactly as FlowIO stores it. Raises BadImage, and only that, for anything
    wrong with this one item.

    item: a path (str or os.PathLike: encode_image_file); encoded image bytes
    (bytes, bytearray, memoryview), as an HTTP request carries them; a file
    object opened in binary mode, read from where it stands to its end; a PIL
    image (encode_pil_image); an HxWx3 uint8 RGB numpy array, or HxW uint8
    gray (array_image). The same image gives the same bytes in every form,
    but for one thing: an array, or a PIL image already decoded, holds
    pixels, and an upright JPEG's pixels are stored again as JPEG where its
    file, bytes, file object and unloaded PIL image keep the JPEG as it is.
    """
    if is_path(item):
        return encode_image_file(item, max_side)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if not data:
            raise BadImage("empty bytes: no image in them")
        try:
            return encode_image_bytes(_checked_length(data), max_side)
        except BadImage:
            if _names_a_file(data):  # bytes are image data here, not a path
                raise BadImage("bytes that name a file, not image data: pass the path "
                               "as str (os.fsdecode(path))")
            raise
    if isinstance(item, Image.Image):
        return encode_pil_image(item, max_side)
    if isinstance(item, np.ndarray):
        return encode_pil_image(array_image(item), max_side)
    if callable(getattr(item, "read", None)):
        return encode_image_bytes(read_file_object(item), max_side)
    raise BadImage(f"not an image: {describe_image_input(item)} (give {IMAGE_INPUTS})")


def describe_image_input(item):
    """A short name for an image input, for its answer or error: "path
    'a.jpg'", "1,234 bytes", "file object 'up.png'", "PIL image 640x480 RGB",
    "numpy array (480, 640, 3) uint8", or its type."""
    if is_path(item):
        return f"path {os.fspath(item)!r}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{len(item):,} bytes"
    if isinstance(item, Image.Image):
        opened_from = getattr(item, "filename", "")  # Image.open(path) keeps it
        name = f" {opened_from!r}" if isinstance(opened_from, str) and opened_from else ""
        return f"PIL image{name} {item.width}x{item.height} {item.mode}"
    if isinstance(item, np.ndarray):
        return f"numpy array {item.shape} {item.dtype}"
    if callable(getattr(item, "read", None)):
        name = getattr(item, "name", None)
        return f"file object {name!r}" if isinstance(name, (str, bytes)) else "file object"
    return "None" if item is None else type(item).__name__
