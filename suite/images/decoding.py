"""One image -> the 8-bit RGB JPEG the suite stores, with Pillow, without TensorFlow.

Every image is decoded by content (not extension), turned upright by its EXIF
orientation, converted to 8-bit RGB (CMYK, grayscale, palette and 16-bit
images; alpha composited on white; the first frame of an animation) and
encoded as JPEG. FlowIO.py stores these bytes in its TFRecords and useModel.py
and the ONNX client classify them, so a file is seen the same way by
training, evaluation and prediction.

What makes a file unusable is decided here, once: not a regular file
(read_image_file), larger than any image we accept (MAX_FILE_BYTES), a size
outside the image-size rule (size_problem, which the exported SavedModel's
graph applies too, from the header), a JPEG with a libjpeg warning (truncated
or corrupt data), or anything Pillow cannot decode, convert or re-encode.
Each is a BadImage whose message is the reason; nothing else escapes for one
file.

A back-end holds images in other forms than files: encode_image takes a path,
encoded bytes, a binary file object, a PIL image or a numpy array, and puts
each through these same steps (what each kind is taken to mean is in its
docstring), so one image gives the same stored bytes whatever form it came in.
"""
import contextlib
import io
import os
import stat
import warnings

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from suite.plumbing.files import file_kind

JPEG_QUALITY = 95            # what re-encoded images are stored at
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white

# The image-size rule, from the header, before anything is decoded: memory is
# bounded by what a file claims, not by what it weighs (a 400 KB PNG can
# claim 12,000x12,000 pixels).
# Pillow refuses images over twice MAX_PIXELS outright and warns above it; we
# refuse both, so a 20000x20000 PNG cannot exhaust memory.
MAX_PIXELS = 64_000_000
# libjpeg's JPEG_MAX_DIMENSION: every image is stored as JPEG, and Pillow's
# encoder fails on a wider one (a 1x70,000 PNG is 287 bytes).
MAX_SIDE = 65_500
# Longer side / shorter side. Evaluation and prediction scale the shorter
# side to image_size / 0.875 (at most) and the longer with it before the centre
# crop, so that step costs (image_size / 0.875)^2 x ratio pixels of float32 RGB: a
# 60,000x1 image took useModel from 0.66 to 1.75 GB. At 20 it stays near a
# square image's cost times 20 (16 MB at image_size 224), while the crop keeps
# less than 5% of such an image anyway; phone panoramas (about 4:1, up to 10:1
# for a full turn) still pass.
MAX_ASPECT_RATIO = 20
# No file is read past this: the largest image we accept stored uncompressed
# (16-bit RGBA, 8 bytes a pixel), plus room for metadata (EXIF, ICC, XMP,
# thumbnails).
MAX_FILE_BYTES = 8 * MAX_PIXELS + 16 * 2**20

class BadImage(Exception):
    """The file is not a usable image; the message is the reason."""


def _to_rgb(image):
    """Any Pillow image -> 8-bit RGB without clipping or warnings."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit grayscale: Pillow's convert("RGB") clips to 255, which turns
        # a 16-bit scan white (Pillow issues 2574, 5991). Scale instead.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        if image.mode == "F" and pixels.max() <= 1.0:
            top = 1.0
        gray = np.clip(np.round(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _needs_turning(image):
    """Whether ImageOps.exif_transpose turns or flips this image: EXIF
    orientations 2-8 (1 is upright; Pillow leaves other values alone)."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9)


def size_problem(width, height):
    """Why an image of width x height pixels may not be decoded, or None.

    The one image-size rule; the exported SavedModel applies the same limits
    in its graph (suite.export.serving_input.size_is_allowed)."""
    size = f"{width}x{height} pixels"
    if width < 1 or height < 1:
        return f"claims {size}: no pixels"
    if max(width, height) > MAX_SIDE:
        return (f"too large to decode safely ({size}, a side over {MAX_SIDE:,}, "
                f"JPEG's limit): shrink it first")
    if width * height > MAX_PIXELS:
        return (f"too large to decode safely ({size}, limit {MAX_PIXELS:,}): "
                f"shrink it first")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"too thin to classify ({size}, one side over {MAX_ASPECT_RATIO} times "
                f"the other): crop it first")
    return None


def read_image_file(path):
    """The bytes of an image file, read with every safeguard.

    Anything that is not a regular file (or a link to one) is refused from
    its metadata and never opened: opening a named pipe blocks until someone
    writes to it, and reading a device need not end. No file is read past
    MAX_FILE_BYTES. Raises BadImage with the reason.
    """
    try:
        info = os.stat(path)  # follows links: a link to an image is that image
        if not stat.S_ISREG(info.st_mode):
            raise BadImage(f"not a regular file ({file_kind(info.st_mode)}): not read")
        if info.st_size > MAX_FILE_BYTES:
            raise BadImage(f"{info.st_size:,} bytes, more than any image we accept "
                           f"({MAX_FILE_BYTES:,}): shrink it first")
        # O_NONBLOCK: should the path become a pipe after the check above,
        # open() returns at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with open(fd, "rb") as f:
            opened = os.fstat(f.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise BadImage(f"not a regular file ({file_kind(opened.st_mode)}): not read")
            # One byte more than the file should hold tells a file that grew.
            data = f.read(min(opened.st_size, MAX_FILE_BYTES) + 1)
            if len(data) > opened.st_size:
                data += f.read(MAX_FILE_BYTES + 1 - len(data))
    except OSError as error:
        raise BadImage(f"cannot read: {error.strerror or error}")
    if len(data) > MAX_FILE_BYTES:
        raise BadImage(f"more than {MAX_FILE_BYTES:,} bytes, more than any image we accept: "
                       f"shrink it first")
    return data


def _check_jpeg(data):
    """Raises BadImage unless libjpeg-turbo decodes every byte of the JPEG
    without a warning.

    libjpeg treats truncated or corrupt data as a warning, pads the missing
    part grey and goes on, and Pillow and TensorFlow both accept the result
    (a JPEG cut in half with its end marker appended decodes "fine").
    simplejpeg's strict mode turns each warning into an error. The DCT
    scaling to 1/8 (min_height/min_width of 1) still reads and checks every
    byte of the compressed data, at a fraction of a full decode's cost.
    """
    try:
        # Decoded in its own colour space: libjpeg-turbo converts CMYK to nothing else.
        source = simplejpeg.decode_jpeg_header(data)[2]
        simplejpeg.decode_jpeg(data, colorspace={"Gray": "GRAY", "CMYK": "CMYK",
                                                 "YCCK": "CMYK"}.get(source, "RGB"),
                               min_height=1, min_width=1, strict=True)
    except (ValueError, RuntimeError) as error:
        raise BadImage(f"broken image: {error}")


@contextlib.contextmanager
def _one_error_path(broken="broken image"):
    """Whatever decoding, turning, converting or resizing one image raises
    becomes that image's BadImage, so one image never ends a run; broken
    starts the message where the image itself is at fault."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"too large to decode safely: {error}")
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"{broken}: {error}")
    except Exception as error:  # Pillow's plug-ins raise many types on odd files
        raise BadImage(f"{broken}: {type(error).__name__}: {error}")


def _check_size(width, height):
    problem = size_problem(width, height)
    if problem:
        raise BadImage(problem)


def _upright_rgb(image, max_side=None):
    """A PIL image whose size passed the rule -> (upright 8-bit RGB image
    within max_side, was_changed). Decodes it (the first frame of an
    animation) when it is not yet; call inside _one_error_path."""
    image.load()  # raises on truncation
    # exif_transpose returns a copy even when it has nothing to do, so
    # whether the image changed is read from the orientation.
    changed = _needs_turning(image)
    upright = ImageOps.exif_transpose(image) if changed else image
    rgb = _to_rgb(upright)
    changed = changed or rgb.mode != image.mode
    if max_side and max(rgb.size) > max_side:
        # In place, on _to_rgb's copy: a caller's PIL image is never changed.
        rgb.thumbnail((max_side, max_side), Image.LANCZOS)
        changed = True
    return rgb, changed


def _decode(data, max_side=None):
    """Encoded bytes -> (PIL RGB image or None, source format, was_changed, (height, width)).

    An upright 8-bit RGB JPEG within max_side is kept as it is: its pixels are
    not needed, so the image returned is None (the strict JPEG check has read
    every byte). (height, width) is always the stored image's size.
    Raises BadImage with the reason when the bytes are not a usable image;
    every step that touches them (open, check, decode, turn, convert, resize)
    is inside that one error path, so one file never ends a run.
    """
    if not data:
        raise BadImage("empty file")
    with _one_error_path():
        image = Image.open(io.BytesIO(data))
        source_format = image.format
        # The header tells the size before anything is decoded.
        _check_size(image.width, image.height)
        if source_format in ("JPEG", "MPO"):  # MPO: a camera's JPEG with a preview after it
            _check_jpeg(data)
        # The header tells all of this too (Image.open reads the EXIF block).
        kept = (source_format == "JPEG" and image.mode == "RGB"
                and not _needs_turning(image)
                and not (max_side and max(image.size) > max_side))
        if kept:
            return None, source_format, False, (image.height, image.width)
        rgb, changed = _upright_rgb(image, max_side)
    return rgb, source_format, changed, (rgb.height, rgb.width)


def _encode_jpeg(rgb):
    """An RGB PIL image -> JPEG bytes at JPEG_QUALITY, as every re-encoded image is stored."""
    buffer = io.BytesIO()
    try:
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    except Exception as error:  # inside the per-file error path, as decoding is
        raise BadImage(f"cannot be stored as JPEG: {type(error).__name__}: {error}")
    return buffer.getvalue()


def encode_image_bytes(data, max_side=None):
    """Encoded bytes of any image -> (JPEG bytes, height, width) as stored.

    A JPEG that is already 8-bit RGB, upright and not resized is kept byte for
    byte (no second lossy compression, and the fastest path); everything else
    is normalised to RGB and encoded at JPEG_QUALITY. Raises BadImage.
    """
    rgb, source_format, changed, (height, width) = _decode(data, max_side)
    if source_format == "JPEG" and not changed:
        return data, height, width
    return _encode_jpeg(rgb), height, width


def encode_image_file(path, max_side=None):
    """An image file -> (JPEG bytes, height, width), exactly as FlowIO stores it.

    useModel.py feeds these bytes through preprocess_for_eval, so a file is
    seen by prediction exactly as its record is seen by evaluation. Raises
    BadImage, and only that, for anything wrong with this one file.
    """
    return encode_image_bytes(read_image_file(path), max_side)


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
    _check_size(image.width, image.height)  # before anything is read or decoded
    data = _opened_file_bytes(image)
    if data is not None:
        return encode_image_bytes(data, max_side)
    # Its pixels can fail too: a closed image, a mode with no way to RGB.
    with _one_error_path(broken="unusable PIL image"):
        rgb, _ = _upright_rgb(image, max_side)
    return _encode_jpeg(rgb), rgb.height, rgb.width


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
    _check_size(array.shape[1], array.shape[0])
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
