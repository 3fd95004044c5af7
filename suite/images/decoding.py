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

A back-end holds images in other forms than files: suite.images.inputs puts
encoded bytes, file objects, PIL images and numpy arrays through these same
steps, so one image gives the same stored bytes whatever form it came in.
"""
import contextlib
import io
import os
import warnings

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from suite.plumbing.files import NotRegularFile, open_regular_file

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
        with open_regular_file(path) as f:  # follows links: a link to an image is that image
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise BadImage(f"{size:,} bytes, more than any image we accept "
                               f"({MAX_FILE_BYTES:,}): shrink it first")
            # One byte more than the file should hold tells a file that grew.
            data = f.read(min(size, MAX_FILE_BYTES) + 1)
            if len(data) > size:
                data += f.read(MAX_FILE_BYTES + 1 - len(data))
    except NotRegularFile as error:
        raise BadImage(f"not a regular file ({error.kind}): not read")
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
def one_image_errors(broken="broken image"):
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


def check_size(width, height):
    problem = size_problem(width, height)
    if problem:
        raise BadImage(problem)


def upright_rgb(image, max_side=None):
    """A PIL image whose size passed the rule -> (upright 8-bit RGB image
    within max_side, was_changed). Decodes it (the first frame of an
    animation) when it is not yet; call inside one_image_errors."""
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
    with one_image_errors():
        image = Image.open(io.BytesIO(data))
        source_format = image.format
        # The header tells the size before anything is decoded.
        check_size(image.width, image.height)
        if source_format in ("JPEG", "MPO"):  # MPO: a camera's JPEG with a preview after it
            _check_jpeg(data)
        # The header tells all of this too (Image.open reads the EXIF block).
        kept = (source_format == "JPEG" and image.mode == "RGB"
                and not _needs_turning(image)
                and not (max_side and max(image.size) > max_side))
        if kept:
            return None, source_format, False, (image.height, image.width)
        rgb, changed = upright_rgb(image, max_side)
    return rgb, source_format, changed, (rgb.height, rgb.width)


def header_size(data):
    """(width, height) an image's header claims, nothing decoded; raises BadImage
    for bytes Pillow does not take for an image. A server checks it against
    its own, smaller limit before decoding (clients/serve.py)."""
    if not data:
        raise BadImage("empty file")
    with one_image_errors():
        with Image.open(io.BytesIO(data)) as image:
            return image.size


def encode_jpeg(rgb):
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
    return encode_jpeg(rgb), height, width


def encode_image_file(path, max_side=None):
    """An image file -> (JPEG bytes, height, width), exactly as FlowIO stores it.

    useModel.py feeds these bytes through preprocess_for_eval, so a file is
    seen by prediction exactly as its record is seen by evaluation. Raises
    BadImage, and only that, for anything wrong with this one file.
    """
    return encode_image_bytes(read_image_file(path), max_side)
