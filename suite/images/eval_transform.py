"""The evaluation transform, the pixel contract of every reader: how a stored
JPEG becomes the network's input before normalisation. Without TensorFlow.

The shorter side is resized to image_size / eval_crop(image_size), then the
central image_size square is taken. suite.preprocessing.evaluation computes
the same in the graph (training's validation, Evaluation.py, useModel.py, the
SavedModel); eval_pixels() here is what the TFLite and ONNX exports take as
input, computed by clients without TensorFlow. The tests hold the two equal.
"""
import math

import numpy as np
import simplejpeg
from PIL import Image

# Evaluation resizes the shorter side to image_size / eval_crop(image_size),
# then takes the central image_size square: ImageNet's 87.5% centre crop,
# except for small images, which are seen whole.
EVAL_CROP = 0.875
WHOLE_IMAGE_SIDE = 32


def eval_crop(image_size):
    """The share of the shorter side that evaluation keeps at image_size:
    EVAL_CROP, the usual centre crop (a photo's subject has background
    around it), but the whole image up to WHOLE_IMAGE_SIDE: small images
    such as Fashion-MNIST's fill their frame, and the crop cut off what
    tells classes apart (BENCHMARKS.md, "Evaluation crop")."""
    return 1.0 if image_size <= WHOLE_IMAGE_SIDE else EVAL_CROP


def eval_shorter_side(image_size):
    """The length evaluation resizes an image's shorter side to before it
    takes the central image_size square."""
    return math.ceil(image_size / eval_crop(image_size))


def eval_resized_size(height, width, image_size):
    """(height, width) the evaluation resize gives an image: the shorter side
    becomes eval_shorter_side(image_size). Computed in float32 and rounded
    half to even, as the graph's evaluation transform does, so both pick the
    same size."""
    shape = np.array([height, width], np.float32)
    scale = np.float32(eval_shorter_side(image_size)) / np.float32(min(height, width))
    new_height, new_width = np.round(shape * scale).astype(int)
    return int(new_height), int(new_width)


def eval_pixels(jpeg, image_size):
    """JPEG bytes (from suite.images.decoding.encode_image_bytes) -> float32
    RGB 0..255 [image_size, image_size, 3]: what the graph computes before
    normalising, and what the TFLite and ONNX exports take.

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
    gives with its defaults, which training and evaluation use.

    TensorFlow decodes with libjpeg-turbo's fast integer IDCT and its "fancy"
    (triangle-filtered) chroma upsampling; simplejpeg is the same library,
    and with fastdct=True, fastupsample=False it gives exactly those pixels
    (the tests compare baseline and progressive, 4:4:4, 4:2:2 and 4:2:0,
    and grayscale JPEGs; the other option pairs are 8 to 62 levels off).
    What TurboJPEG's API cannot decode -- sampling factors it does not know,
    e.g. chroma finer than luma -- FlowIO.py and useModel.py never store:
    the strict JPEG check of suite.images.decoding, the same library, refuses
    those files (BadImage). Raises ValueError for bytes that are not a JPEG
    it decodes.
    """
    return simplejpeg.decode_jpeg(jpeg, colorspace="RGB", fastdct=True, fastupsample=False)
