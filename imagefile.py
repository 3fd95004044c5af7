"""One image file -> the 8-bit RGB JPEG the suite stores, with Pillow only.

Every image is decoded by content (not extension), turned upright by its EXIF
orientation, converted to 8-bit RGB (CMYK, grayscale, palette and 16-bit
images; alpha composited on white; the first frame of an animation) and
encoded as JPEG. FlowIO.py stores these bytes in its TFRecords and useModel.py
classifies them, so a file is seen the same way by training, evaluation and
prediction. No TensorFlow here: a client that only has Pillow (and
simplejpeg, the strict JPEG check) can read images exactly as the suite does.

What makes a file unusable is decided here, once: not a regular file
(read_image_file), larger than any image we accept (MAX_FILE_BYTES), a size
outside the image-size rule (size_problem, which useModel's served graph
applies too, from the header), a JPEG with a libjpeg warning (truncated or
corrupt data), or anything Pillow cannot decode, convert or re-encode. Each is
a BadImage whose message is the reason; nothing else escapes for one file.

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
import stat
import sys
import unicodedata
import warnings

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

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

_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISDIR, "a folder"))
# Evaluation resizes the shorter side to image_size / eval_crop(image_size),
# then takes the central image_size square: ImageNet's 87.5% centre crop,
# except for small images, which are seen whole.
EVAL_CROP = 0.875
WHOLE_IMAGE_SIDE = 32
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


def size_problem(width, height):
    """Why an image of width x height pixels may not be decoded, or None.

    The one image-size rule; useModel.serving_preprocess applies the same
    limits in the served graph (see size_is_allowed there)."""
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


def display_name(path):
    """A file name as text for reports and JSON: bytes that are not UTF-8
    (Linux allows any bytes in a name; Python keeps them as lone surrogates,
    which no UTF-8 file or JSON can hold) are written as \\xNN, and control
    characters and line separators as \\n, \\x1b, \\u2028, so a name never
    breaks a report line. Names of ordinary text are unchanged."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _file_kind(mode):
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a regular file")


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
            raise BadImage(f"not a regular file ({_file_kind(info.st_mode)}): not read")
        if info.st_size > MAX_FILE_BYTES:
            raise BadImage(f"{info.st_size:,} bytes, more than any image we accept "
                           f"({MAX_FILE_BYTES:,}): shrink it first")
        # O_NONBLOCK: should the path become a pipe after the check above,
        # open() returns at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with open(fd, "rb") as f:
            opened = os.fstat(f.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise BadImage(f"not a regular file ({_file_kind(opened.st_mode)}): not read")
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format = image.format
            # The header tells the size before anything is decoded.
            problem = size_problem(image.width, image.height)
            if problem:
                raise BadImage(problem)
            if source_format in ("JPEG", "MPO"):  # MPO: a camera's JPEG with a preview after it
                _check_jpeg(data)
            # The header tells all of this too (Image.open reads the EXIF block).
            kept = (source_format == "JPEG" and image.mode == "RGB"
                    and not _needs_turning(image)
                    and not (max_side and max(image.size) > max_side))
            if kept:
                return None, source_format, False, (image.height, image.width)
            image.load()  # the first frame of an animation; raises on truncation
            # exif_transpose returns a copy even when it has nothing to do, so
            # whether the image changed is read from the orientation.
            changed = _needs_turning(image)
            upright = ImageOps.exif_transpose(image) if changed else image
            rgb = _to_rgb(upright)
            changed = changed or rgb.mode != image.mode
            if max_side and max(rgb.size) > max_side:
                rgb.thumbnail((max_side, max_side), Image.LANCZOS)
                changed = True
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"too large to decode safely: {error}")
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImage(f"broken image: {error}")
    except Exception as error:  # Pillow's plug-ins raise many types on odd files
        raise BadImage(f"broken image: {type(error).__name__}: {error}")
    return rgb, source_format, changed, (rgb.height, rgb.width)


def encode_image_bytes(data, max_side=None):
    """Encoded bytes of any image -> (JPEG bytes, height, width) as stored.

    A JPEG that is already 8-bit RGB, upright and not resized is kept byte for
    byte (no second lossy compression, and the fastest path); everything else
    is normalised to RGB and encoded at JPEG_QUALITY. Raises BadImage.
    """
    rgb, source_format, changed, (height, width) = _decode(data, max_side)
    if source_format == "JPEG" and not changed:
        return data, height, width
    buffer = io.BytesIO()
    try:
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    except Exception as error:  # inside the per-file error path, as decoding is
        raise BadImage(f"cannot be stored as JPEG: {type(error).__name__}: {error}")
    return buffer.getvalue(), height, width


def encode_image_file(path, max_side=None):
    """An image file -> (JPEG bytes, height, width), exactly as FlowIO stores it.

    useModel.py feeds these bytes through preprocess_for_eval, so a file is
    seen by prediction exactly as its record is seen by evaluation. Raises
    BadImage, and only that, for anything wrong with this one file.
    """
    return encode_image_bytes(read_image_file(path), max_side)


# ---------------------------------------------------------------------------
# Finding image files
# ---------------------------------------------------------------------------
def is_hidden(name):
    return name.startswith(".") or name in IGNORED_FILES


def walk_files(folder):
    """(every non-hidden file under folder, sorted; folders that could not be
    listed, as {"path", "reason"}).

    Symlinked folders are followed, except into a folder already walked or an
    ancestor of `folder` (a symlink loop, or a link that would pull other
    classes into this one), so the walk always ends. Entries that are not
    regular files (pipes, sockets, devices) are listed too, never opened:
    imagefile.read_image_file refuses them by path, so they are reported.
    """
    top = os.path.realpath(folder)
    seen_dirs = set()
    found, unlisted = [], []

    def unreadable(error):  # os.walk would skip such a folder silently
        unlisted.append({"path": error.filename,
                         "reason": f"cannot list folder: {error.strerror or error}"})

    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs or top.startswith(real + os.sep):
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(os.path.join(root, f) for f in files if not is_hidden(f))
    return sorted(found), unlisted


def expand_inputs(inputs):
    """Files, folders (recursively, hidden entries skipped) and glob patterns ->
    (paths, problems) where problems are inputs that matched nothing and
    folders that could not be listed. Entries that are not regular files (a
    pipe, a socket, a device) are kept, not opened: Classifier.predict
    reports each by path (imagefile.read_image_file refuses them unread)."""
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found, unlisted = walk_files(item)
            problems.extend({"path": u["path"], "error": u["reason"]} for u in unlisted)
            if not found and not unlisted:
                problems.append({"path": item, "error": "folder has no files"})
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            # Everything a pattern matches but folders (a pattern names files).
            matches = sorted(p for p in glob.glob(item, recursive=True) if not os.path.isdir(p))
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


def eval_crop(image_size):
    """The share of the shorter side that evaluation keeps at image_size:
    EVAL_CROP, the usual centre crop (a photo's subject has background
    around it), but the whole image up to WHOLE_IMAGE_SIDE: small images
    such as Fashion-MNIST's fill their frame, and the crop cut off what
    tells classes apart (a default Fashion-MNIST model scored 0.939 on its
    validation split seen whole, 0.934 centre-cropped; BENCHMARKS.md,
    "Accuracy")."""
    return 1.0 if image_size <= WHOLE_IMAGE_SIDE else EVAL_CROP


def eval_shorter_side(image_size):
    """The length evaluation resizes an image's shorter side to before it
    takes the central image_size square (FlowIO.eval_pixels and
    eval_resized_size both start from it)."""
    return math.ceil(image_size / eval_crop(image_size))


def eval_resized_size(height, width, image_size):
    """(height, width) the evaluation resize gives an image: the shorter side
    becomes eval_shorter_side(image_size). Computed in float32 and rounded
    half to even, as FlowIO.preprocess_for_eval does in the graph, so both
    pick the same size."""
    shape = np.array([height, width], np.float32)
    scale = np.float32(eval_shorter_side(image_size)) / np.float32(min(height, width))
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
