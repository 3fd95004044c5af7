"""One image file -> the 8-bit RGB JPEG the suite stores, with Pillow only.

Every image is decoded by content (not extension), turned upright by its EXIF
orientation, converted to 8-bit RGB (CMYK, grayscale, palette and 16-bit
images; alpha composited on white; the first frame of an animation) and
encoded as JPEG. FlowIO.py stores these bytes in its TFRecords and useModel.py
classifies them, so a file is seen the same way by training, evaluation and
prediction. No TensorFlow here: a client that only has Pillow can read images
exactly as the suite does.
"""
import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

JPEG_QUALITY = 95            # what re-encoded images are stored at
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
# Pillow refuses images over twice this many pixels outright and warns above
# it; we refuse both, so a 20000x20000 PNG cannot exhaust memory.
MAX_PIXELS = 64_000_000


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


def _decode(data, max_side=None):
    """Encoded bytes -> (PIL RGB image, source format, was_changed, (height, width)).

    A file that will be kept as it is (an upright 8-bit RGB JPEG within
    max_side: its pixels are not needed) is decoded at 1/8 scale (libjpeg's
    DCT scaling): that still reads and checks every byte of the compressed
    data, so a truncated or corrupt file fails with the same error as in a
    full decode, in under half the time. The image returned is then that
    small one; (height, width) is always the stored image's size.
    Raises BadImage with the reason when the bytes are not a usable image.
    """
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format = image.format
            if image.width * image.height > MAX_PIXELS:
                raise BadImage(f"too large to decode safely ({image.width}x{image.height} "
                               f"pixels, limit {MAX_PIXELS:,}): shrink it first")
            # The header tells all of this before decoding (the EXIF block is
            # read by Image.open).
            kept = (source_format == "JPEG" and image.mode == "RGB"
                    and not _needs_turning(image)
                    and not (max_side and max(image.size) > max_side))
            if kept:
                width, height = image.size
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()  # the first frame of an animation; raises on truncation
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"too large to decode safely: {error}")
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"broken image: {error}")
    if kept:
        return image, source_format, False, (height, width)
    # exif_transpose returns a copy even when it has nothing to do, so whether
    # the image changed is read from the orientation, not from the object.
    changed = _needs_turning(image)
    upright = ImageOps.exif_transpose(image) if changed else image
    rgb = _to_rgb(upright)
    changed = changed or rgb.mode != image.mode
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.LANCZOS)
        changed = True
    return rgb, source_format, changed, (rgb.height, rgb.width)


def encode_image_bytes(data, max_side=None):
    """Encoded bytes of any image -> (JPEG bytes, height, width) as stored.

    A JPEG that is already 8-bit RGB, upright and not resized is kept byte for
    byte (no second lossy compression, and the fastest path); everything else
    is normalised to RGB and encoded at JPEG_QUALITY.
    """
    rgb, source_format, changed, (height, width) = _decode(data, max_side)
    if source_format == "JPEG" and not changed:
        return data, height, width
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue(), height, width


def encode_image_file(path, max_side=None):
    """An image file -> (JPEG bytes, height, width), exactly as FlowIO stores it.

    useModel.py feeds these bytes through preprocess_for_eval, so a file is
    seen by prediction exactly as its record is seen by evaluation.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise BadImage(f"cannot read: {error.strerror or error}")
    return encode_image_bytes(data, max_side)
