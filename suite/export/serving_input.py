"""The SavedModel's input: encoded bytes of any image TensorFlow decodes,
checked from their header against the image-size rule before anything is
decoded, then seen as FlowIO.py stores them."""
import tensorflow as tf

from suite.images.decoding import BACKGROUND, JPEG_QUALITY, MAX_ASPECT_RATIO, MAX_PIXELS, MAX_SIDE
from suite.preprocessing.evaluation import preprocess_for_eval


def _starts_with(data, prefix, offset=0):
    head = tf.strings.substr(data, offset, len(prefix))
    return tf.equal(head, prefix)


# The signatures TensorFlow's decode_image dispatches on (decode_image_op.cc).
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF8",
               "bmp": b"BM"}


def header_size(encoded):
    """(height, width) that an image's header claims, as int64 scalars, read
    without decoding it: JPEG by tf.io.extract_jpeg_shape (the header only),
    PNG from IHDR, GIF from its logical screen, BMP as TensorFlow's decoder
    reads it (int32 at 18 and 22, height signed), WebP from its VP8, VP8L or
    VP8X chunk. (-1, -1) for anything else, which no decoder then sees."""
    padded = tf.strings.join([encoded, b"\0" * 32])  # substr never runs past the end
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, 32), tf.uint8), tf.int64)

    def number(start, length, big_endian=False):
        shifts = range(length)[::-1] if big_endian else range(length)
        return tf.add_n([head[start + i] * (1 << (8 * shift)) for i, shift in enumerate(shifts)])

    def int32(start):  # little-endian, signed
        value = number(start, 4)
        return tf.where(value >= 2**31, value - 2**32, value)

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(encoded), tf.int64)
        return shape[0], shape[1]

    def png():  # IHDR must be the first chunk; otherwise no size, and refused
        ihdr = _starts_with(padded, b"IHDR", 12)
        return (tf.where(ihdr, number(20, 4, True), 0), tf.where(ihdr, number(16, 4, True), 0))

    def webp():
        chunk = tf.strings.substr(padded, 12, 4)
        bits = number(21, 4)
        return tf.case([
            (tf.equal(chunk, b"VP8 "), lambda: (tf.bitwise.bitwise_and(number(28, 2), 0x3FFF),
                                               tf.bitwise.bitwise_and(number(26, 2), 0x3FFF))),
            (tf.equal(chunk, b"VP8L"), lambda: (
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
                tf.bitwise.bitwise_and(bits, 0x3FFF) + 1)),
            (tf.equal(chunk, b"VP8X"), lambda: (number(27, 3) + 1, number(24, 3) + 1))],
            default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))

    return tf.case([
        (_starts_with(padded, _SIGNATURES["jpeg"]), jpeg),
        (_starts_with(padded, _SIGNATURES["png"]), png),
        (_starts_with(padded, _SIGNATURES["gif"]), lambda: (number(8, 2), number(6, 2))),
        (_starts_with(padded, _SIGNATURES["bmp"]), lambda: (tf.abs(int32(22)), int32(18))),
        (tf.logical_and(_starts_with(padded, b"RIFF"), _starts_with(padded, b"WEBP", 8)), webp)],
        default=lambda: (tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)))


def size_is_allowed(height, width):
    """suite.images.decoding.size_problem's rule, as a TensorFlow bool: the same limits
    (MAX_SIDE, MAX_PIXELS, MAX_ASPECT_RATIO) in the served graph."""
    longer, shorter = tf.maximum(height, width), tf.minimum(height, width)
    # Clamped so the product cannot overflow int64 (a PNG side may be 2^32 - 1);
    # a side over MAX_SIDE fails anyway.
    side = MAX_SIDE + 1
    area = tf.minimum(height, side) * tf.minimum(width, side)
    return tf.reduce_all([shorter >= 1, longer <= MAX_SIDE,
                          area <= MAX_PIXELS,
                          longer <= MAX_ASPECT_RATIO * shorter])


def check_image_header(encoded):
    """encoded, once its header passes the image-size rule: a request with a
    PNG of a few hundred KB claiming 12,000x12,000 pixels gets InvalidArgument
    before any decoder allocates them (it pushed a server past 6 GB), and the
    server goes on serving."""
    height, width = header_size(encoded)
    known = height >= 0
    checks = [
        tf.debugging.Assert(known, ["not a JPEG, PNG, GIF, BMP or WebP image"]),
        tf.debugging.Assert(tf.logical_or(tf.logical_not(known), size_is_allowed(height, width)), [
            tf.strings.format(
                "image of {}x{} pixels refused: each side must be 1 to {} pixels, at most {} "
                "pixels in all, the longer side at most {} times the shorter",
                (width, height, MAX_SIDE, MAX_PIXELS,
                 MAX_ASPECT_RATIO))])]
    with tf.control_dependencies(checks):
        return tf.identity(encoded)


def serving_preprocess(encoded, image_size, preprocessing=None):
    """Encoded bytes of any image TensorFlow decodes -> the network input,
    normalised as the model.json "preprocessing" given says (suite.preprocessing.normalization).

    FlowIO stores every image as JPEG (PNG and the rest re-encoded at
    JPEG_QUALITY, 4:4:4, transparency on white) and evaluation runs
    preprocess_for_eval on those bytes. The served graph does the same: a
    JPEG goes straight to preprocess_for_eval, exactly as useModel.py's
    Classifier and Evaluation.py see it; anything else is decoded, composited
    and re-encoded as FlowIO would, so the network sees what it was trained
    on. Not replicated: EXIF orientation (TensorFlow ignores EXIF) and
    --max_side (the image is shrunk to at most image_size / 0.875 anyway).
    Every image first passes check_image_header: the image-size rule of
    suite.images.decoding, from the header, before anything is decoded.
    """
    encoded = check_image_header(encoded)
    # Room for the longest signature check, so substr never runs past the end.
    padded = tf.strings.join([encoded, b"\0" * 12])
    is_jpeg = _starts_with(padded, b"\xff\xd8\xff")
    may_have_alpha = tf.logical_or(  # PNG or WebP; a BMP's 4th byte is often padding
        _starts_with(padded, b"\x89PNG"),
        tf.logical_and(_starts_with(padded, b"RIFF"), _starts_with(padded, b"WEBP", 8)))

    def on_white():
        # As stored: 1 to 4 channels (gray, gray + alpha, RGB, RGB + alpha);
        # WebP's decoder refuses a channel count other than the file's own.
        image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
        channels = tf.shape(image)[2]
        colour = tf.cond(channels < 3, lambda: tf.tile(image[:, :, :1], [1, 1, 3]),
                         lambda: image[:, :, :3])
        alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[:, :, -1:],
                        lambda: tf.fill(tf.shape(image[:, :, :1]), tf.constant(255, tf.uint8)))
        alpha = tf.cast(alpha, tf.float32) / 255.0
        background = tf.constant(BACKGROUND, tf.float32)
        blended = tf.cast(colour, tf.float32) * alpha + background * (1.0 - alpha)
        return tf.cast(tf.round(blended), tf.uint8)

    def opaque():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    def as_jpeg():
        rgb = tf.cond(may_have_alpha, on_white, opaque)
        return tf.io.encode_jpeg(rgb, quality=JPEG_QUALITY, chroma_downsampling=False)

    jpeg = tf.cond(is_jpeg, lambda: encoded, as_jpeg)
    return preprocess_for_eval(jpeg, image_size, preprocessing)
