"""The per-image training augmentation: a random crop (the presets of
train.py --augment), a left-right flip, and random erasing on top; decoded
only where the crop is (TF-slim's and Inception's recipe).

Every random choice comes from a per-image seed (stateless ops), so a run
with train.py --seed repeats exactly.
"""
import dataclasses

import tensorflow as tf

from suite.preprocessing.evaluation import eval_pixels
from suite.preprocessing.normalization import normalize
from suite.preprocessing.random_erasing import erase, erased_box

# Training augmentation presets (train.py --augment): the random crop's share
# of the image area and range of aspect ratios, and whether to flip. "none"
# trains on the evaluation transform. "light" keeps 56-100% of the area (75-
# 100% of the side): shifted and zoomed by up to a third, around both of
# evaluation's scales, the whole image (small images) and the 87.5% centre
# crop, which is what pad-and-crop does for CIFAR-sized images; "standard"
# and "strong" zoom in up to 2x and 3.5x (strong is Inception's crop, Szegedy
# et al., arXiv 1409.4842), which photos can afford and a 28-px image cannot
# (BENCHMARKS.md, "Accuracy").
AUGMENTATIONS = {
    "none": None,
    "light": {"area": (0.56, 1.0), "aspect": (1.0, 1.0), "flip": True},
    "standard": {"area": (0.25, 1.0), "aspect": (3 / 4, 4 / 3), "flip": True},
    "strong": {"area": (0.08, 1.0), "aspect": (3 / 4, 4 / 3), "flip": True},
}


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What the training augmentation does: the per-image preset (a key of
    AUGMENTATIONS), the strengths of mixup and CutMix (their Beta alpha; 0 is
    off: suite.preprocessing.mixup) and the probability of random erasing.
    train.py's flags of the same names; model.json records it (record())."""
    preset: str = "standard"
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0

    def record(self):
        return dataclasses.asdict(self)

    def describe(self):
        """The training line's words, e.g. "light augmentation + mixup 0.2"."""
        words = [f"{self.preset} augmentation"]
        words += [f"{name.replace('_', ' ')} {strength:g}"
                  for name, strength in self.record().items() if name != "preset" and strength]
        return " + ".join(words)


def default_augmentation(source_side, image_size):
    """The --augment preset for images whose median side is source_side,
    trained at image_size: "light" when the source is not at least twice the
    training size (cropping a quarter of a 28-px image leaves 14 px to blow
    up), else "standard" (BENCHMARKS.md, "Accuracy")."""
    return "light" if source_side < 2 * image_size else "standard"


def augment(shape, augmentation, seed, image_size, random_erasing=0.0):
    """Every random choice of the training augmentation, for an image of
    `shape` ([height, width, channels]) trained at image_size: (crop window
    [top, left, height, width] of the source, flip, erased box [top, left,
    height, width] of the trained image, empty when none). `augmentation` is
    a preset of AUGMENTATIONS ("none": no crop or flip, the eval transform);
    random_erasing the probability of erasing a box (erased_box). seed is an int64 pair,
    so a seeded run repeats exactly."""
    preset = AUGMENTATIONS[augmentation]
    if preset is None:
        window, flip = tf.stack([0, 0, shape[0], shape[1]]), tf.constant(False)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
            aspect_ratio_range=preset["aspect"], area_range=preset["area"],
            max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        flip = preset["flip"] & (tf.random.stateless_uniform([], seed[::-1]) < 0.5)
    return window, flip, erased_box(image_size, random_erasing, seed)


def decode_crop(encoded, window, image_size):
    """JPEG bytes -> the `window` of the image resized to image_size, decoding
    only the window (a speed trick; what is cropped is augment()'s choice).

    The crop is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when
    its shorter side is at least that many times image_size: decoding and
    resizing then touch 4-64x fewer pixels, and the DCT scaling is a properly
    filtered downscale. What is left to resize is a factor below 2, where
    plain bilinear (TF-slim's choice) no longer aliases, so the costlier
    antialiased kernel is not needed here. (The window is given in the scaled
    image's coordinates.)
    """
    shorter = tf.minimum(window[2], window[3])
    ratios = (1, 2, 4, 8)
    scale_index = tf.add_n([tf.cast(shorter >= r * image_size, tf.int32) for r in ratios[1:]])
    image = tf.switch_case(scale_index, [
        lambda ratio=ratio: tf.io.decode_and_crop_jpeg(
            encoded, tf.maximum(window // ratio, [0, 0, 1, 1]), channels=3, ratio=ratio,
            dct_method="INTEGER_FAST")  # faster IDCT; its error is far below augmentation's
        for ratio in ratios])
    return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])


def preprocess_for_train(encoded, image_size, seed, augmentation="standard",
                         preprocessing=None, random_erasing=0.0):
    """JPEG bytes -> a training image: augment()'s random crop resized to
    image_size and its flip (with augmentation "none", the eval transform),
    normalised as `preprocessing` (a model.json's) says, then its erased box
    (random_erasing: the probability of one) filled with noise."""
    window, flip, box = augment(tf.io.extract_jpeg_shape(encoded), augmentation, seed,
                                image_size, random_erasing)
    if AUGMENTATIONS[augmentation] is None:
        image = eval_pixels(encoded, image_size)
    else:
        image = decode_crop(encoded, window, image_size)
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    image = normalize(image, preprocessing)
    return erase(image, box, seed) if random_erasing > 0 else image
