"""One image file -> the 8-bit RGB JPEG the suite stores, with Pillow only.

Every image is decoded by content (not extension), turned upright by its EXIF
orientation, converted to 8-bit RGB (CMYK, grayscale, palette and 16-bit
images; alpha composited on white; the first frame of an animation) and
encoded as JPEG. FlowIO.py stores these bytes in its TFRecords and useModel.py
classifies them, so a file is seen the same way by training, evaluation and
prediction. No TensorFlow here: a client that only has Pillow can read images
exactly as the suite does.

Also here, for the same reason, the rest of what a classifying client shares
with useModel.py: finding image files (walk_files, expand_inputs), the
evaluation resize and crop in Pillow (eval_pixels: the pixel contract of
the TFLite and ONNX exports), and the results' form (rank, print_results).
clients/onnx_predict.py needs only this file of the suite's.
"""
import glob
import io
import math
import os
import sys
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

JPEG_QUALITY = 95            # what re-encoded images are stored at
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
# Pillow refuses images over twice this many pixels outright and warns above
# it; we refuse both, so a 20000x20000 PNG cannot exhaust memory.
MAX_PIXELS = 64_000_000
# Evaluation resizes the shorter side to image_size / EVAL_CROP, then takes the
# central image_size square (the usual 87.5% centre crop).
EVAL_CROP = 0.875
IGNORED_FILES = {"Thumbs.db", "desktop.ini"}


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


# ---------------------------------------------------------------------------
# Finding image files
# ---------------------------------------------------------------------------
def is_hidden(name):
    return name.startswith(".") or name in IGNORED_FILES


def walk_files(folder):
    """Every non-hidden file under folder, sorted.

    Symlinked folders are followed, except into a folder already walked or an
    ancestor of `folder` (a symlink loop, or a link that would pull other
    classes into this one), so the walk always ends.
    """
    top = os.path.realpath(folder)
    seen_dirs = set()
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs or top.startswith(real + os.sep):
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(os.path.join(root, f) for f in files if not is_hidden(f))
    return sorted(found)


def expand_inputs(inputs):
    """Files, folders (recursively, hidden entries skipped) and glob patterns ->
    (paths, problems) where problems are inputs that matched nothing."""
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = walk_files(item)
            if not found:
                problems.append({"path": item, "error": "folder has no files"})
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                problems.append({"path": item, "error": "pattern matches no file"})
            paths.extend(matches)
        else:
            problems.append({"path": item, "error": "no such file or folder"})
    return paths, problems


# ---------------------------------------------------------------------------
# The pixel contract of the exported models, without TensorFlow
# ---------------------------------------------------------------------------
def labels_path(model_path):
    """Where an exported pixel model's class names are (one per line, in
    output order): beside it, named as it is with .labels.txt."""
    return os.path.splitext(model_path)[0] + ".labels.txt"


def eval_resized_size(height, width, image_size):
    """(height, width) the evaluation resize gives an image: the shorter side
    becomes ceil(image_size / EVAL_CROP). Computed in float32 and rounded half
    to even, as FlowIO.preprocess_for_eval does in the graph, so both pick
    the same size."""
    shape = np.array([height, width], np.float32)
    scale = np.float32(math.ceil(image_size / EVAL_CROP)) / np.float32(min(height, width))
    new_height, new_width = np.round(shape * scale).astype(int)
    return int(new_height), int(new_width)


def eval_pixels(jpeg, image_size):
    """JPEG bytes (from encode_image_bytes/encode_image_file) -> float32 RGB
    0..255 [image_size, image_size, 3]: what FlowIO.preprocess_for_eval
    computes before normalising, and what the TFLite and ONNX exports take.

    The bytes are decoded to the same 8-bit pixels as tf.io.decode_jpeg
    gives (decode_jpeg_as_tensorflow). Pillow's BILINEAR resize is the
    triangle filter widened by the scale factor when shrinking, the kernel
    of tf.image.resize(antialias=True); it runs on 32-bit float channels
    ("F" images), as TensorFlow's does, so nothing is rounded to 8 bits
    between the decode and the network (Pillow resizes an RGB image only in
    8 bits). Agrees with the graph to about 0.01 of 255.
    """
    rgb = decode_jpeg_as_tensorflow(jpeg).astype(np.float32)
    height, width = eval_resized_size(rgb.shape[0], rgb.shape[1], image_size)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c]))
                           .resize((width, height), Image.BILINEAR))
                for c in range(3)]
    top, left = (height - image_size) // 2, (width - image_size) // 2
    return np.stack(channels, axis=-1)[top:top + image_size, left:left + image_size]


def decode_jpeg_as_tensorflow(jpeg):
    """JPEG bytes -> uint8 RGB [height, width, 3], the pixels tf.io.decode_jpeg
    gives with its defaults, which evaluation and training use.

    TensorFlow decodes with libjpeg's fast integer IDCT (JDCT_IFAST) and
    "fancy" (triangle-filtered) chroma upsampling. Pillow's ordinary decode
    uses the accurate IDCT: on sharp edges at quality 95 that is up to ~20
    levels away, enough to move probabilities by 0.1. Pillow picks the fast
    IDCT only in "draft" decoding (the second item of decoderconfig; the
    first, 1, keeps the full size), which also turns fancy upsampling off.
    So: a JPEG without chroma subsampling (4:4:4, all that encode_image_bytes
    writes) is decoded in draft mode, exactly; a 4:2:0 or 4:2:2 JPEG (kept
    byte for byte from a camera or the web) is decoded in draft mode as
    YCbCr, whose chroma is then plain copies of the subsampled planes, and
    libjpeg's fancy upsampling (jdsample.c) and YCbCr -> RGB conversion
    (jdcolor.c) are redone here in integers, exactly. Other subsamplings
    (4:4:0, 4:1:1: rare) get Pillow's accurate decode, a few levels off.
    Checked against TensorFlow by the tests.
    """
    image = Image.open(io.BytesIO(jpeg))
    if image.format != "JPEG":
        raise ValueError(f"decode_jpeg_as_tensorflow takes JPEG bytes, not {image.format}")
    sampling = [(h, v) for _, h, v, _ in image.layer]
    if len(set(sampling)) == 1:
        image.decoderconfig = (1, 1)
        return np.asarray(image.convert("RGB"))
    h, v = sampling[0]
    if not (len(sampling) == 3 and sampling[1] == sampling[2] == (1, 1)
            and (h, v) in ((2, 1), (2, 2)) and image.info.get("adobe_transform") != 0):
        return np.asarray(image.convert("RGB"))
    image.draft("YCbCr", None)
    image.decoderconfig = (1, 1)
    ycc = np.asarray(image)
    height, width = ycc.shape[:2]
    chroma = [ycc[::v, ::h, c] for c in (1, 2)]  # the planes as stored
    if chroma[0].shape[1] > 2:  # libjpeg copies planes 2 or fewer samples wide
        upsample = _fancy_upsample_h2v2 if v == 2 else _fancy_upsample_h2v1
        chroma = [upsample(plane)[:height, :width] for plane in chroma]
    else:
        chroma = [ycc[:, :, c] for c in (1, 2)]
    return _ycc_to_rgb(ycc[:, :, 0], *chroma)


def _with_edges(x, axis):
    """x with its first and last entries repeated once outward along axis:
    libjpeg's upsamplers replicate the edge samples."""
    return np.concatenate([np.take(x, [0], axis=axis), x, np.take(x, [-1], axis=axis)],
                          axis=axis)


def _fancy_upsample_h2v1(plane):
    """libjpeg's h2v1_fancy_upsample: each sample -> 2 across, 3/4 of it and
    1/4 of its nearer neighbour, with its rounding."""
    padded = _with_edges(plane.astype(np.int64), 1)
    before, this, after = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    out = np.empty((plane.shape[0], 2 * plane.shape[1]), np.int64)
    out[:, 0::2] = (3 * this + before + 1) >> 2
    out[:, 1::2] = (3 * this + after + 2) >> 2
    return out


def _fancy_upsample_h2v2(plane):
    """libjpeg's h2v2_fancy_upsample: the same triangle filter down, then
    across (9/16, 3/16, 3/16, 1/16), with its rounding."""
    padded = _with_edges(plane.astype(np.int64), 0)
    sums = np.empty((2 * plane.shape[0], plane.shape[1]), np.int64)
    sums[0::2] = 3 * padded[1:-1] + padded[:-2]
    sums[1::2] = 3 * padded[1:-1] + padded[2:]
    padded = _with_edges(sums, 1)
    before, this, after = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    out = np.empty((sums.shape[0], 2 * plane.shape[1]), np.int64)
    out[:, 0::2] = (3 * this + before + 8) >> 4
    out[:, 1::2] = (3 * this + after + 7) >> 4
    return out


def _fixed(x, bits=16):
    return int(x * (1 << bits) + 0.5)


# libjpeg's YCbCr -> RGB tables (jdcolor.c build_ycc_rgb_table), 16-bit fixed point.
_CENTRED = np.arange(256, dtype=np.int64) - 128
_CR_R = (_fixed(1.40200) * _CENTRED + (1 << 15)) >> 16
_CB_B = (_fixed(1.77200) * _CENTRED + (1 << 15)) >> 16
_CR_G = -_fixed(0.71414) * _CENTRED
_CB_G = -_fixed(0.34414) * _CENTRED + (1 << 15)


def _ycc_to_rgb(y, cb, cr):
    y = y.astype(np.int64)
    rgb = np.stack([y + _CR_R[cr], y + ((_CB_G[cb] + _CR_G[cr]) >> 16), y + _CB_B[cb]], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Results, as useModel.py and the clients give them
# ---------------------------------------------------------------------------
def rank(probabilities, labels, top_k=3, threshold=None):
    """One image's probabilities (labels order) -> {"predictions": the top_k
    [{"label", "probability"}] best first, "label": the best class, or
    "unknown" when its probability is below threshold}."""
    order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
    predictions = [{"label": labels[i], "probability": float(probabilities[i])}
                   for i in order]
    unsure = threshold is not None and predictions[0]["probability"] < threshold
    return {"predictions": predictions,
            "label": "unknown" if unsure else predictions[0]["label"]}


def print_results(results):
    """The text form: "path: label  (label p, ...)" per image on stdout, and
    "path: error: reason" per unusable input on stderr."""
    for result in results:
        if "error" in result:
            print(f"{result['path']}: error: {result['error']}", file=sys.stderr)
            continue
        guesses = ", ".join(f"{p['label']} {p['probability']:.3f}"
                            for p in result["predictions"])
        print(f"{result['path']}: {result['label']}  ({guesses})")
