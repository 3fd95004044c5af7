"""suite/preprocessing/augment.py: the training crop's size and range, a
function of its seed, each preset within its area and aspect, and the
default preset for the data."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import augment, jpeg
from suite.preprocessing import (augment as augment_module, evaluation as eval_preprocessing,
                                 normalization)






@pytest.mark.parametrize("width,height,size", [(28, 28, 32), (640, 480, 64), (300, 90, 32)])
def test_augmentation_gives_the_training_size_in_the_normalised_range(width, height, size):
    out = augment(jpeg(width, height), size, [1, 2])
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    low = (0 - np.array(normalization.MEAN_RGB)) / np.array(normalization.STD_RGB)
    high = (255 - np.array(normalization.MEAN_RGB)) / np.array(normalization.STD_RGB)
    assert (out >= low - 1e-3).all() and (out <= high + 1e-3).all()


def test_augmentation_is_a_function_of_its_seed():
    encoded = jpeg(96, 96, seed=3)
    first, again = augment(encoded, 32, [5, 6]), augment(encoded, 32, [5, 6])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, augment(encoded, 32, [7, 8]))


def crop_windows(augmentation, shape, seeds=40):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        window, flip, _ = augment_module.augment(tf.constant(shape, tf.int32), augmentation,
                                                 seed, 32)
        return [session.run((window, flip), {seed: [s, 7 * s + 1]}) for s in range(seeds)]


@pytest.mark.parametrize("augmentation", ["light", "standard", "strong"])
def test_each_preset_crops_within_its_own_area_and_aspect_range(augmentation):
    preset = augment_module.AUGMENTATIONS[augmentation]
    results = crop_windows(augmentation, [280, 280, 3])
    areas = [h * w / 280 ** 2 for (_, _, h, w), _ in results]
    aspects = [w / h for (_, _, h, w), _ in results]
    # (sample_distorted_bounding_box rounds the window to whole pixels)
    assert min(areas) >= preset["area"][0] - 0.01 and max(areas) <= 1.0
    assert min(aspects) >= preset["aspect"][0] - 0.02 and max(aspects) <= preset["aspect"][1] + 0.02
    # The range is used, not one corner of it, and about half the crops flip.
    assert min(areas) < preset["area"][0] + 0.25 * (1 - preset["area"][0])
    assert 0.2 < np.mean([flip for _, flip in results]) < 0.8


def test_the_light_preset_never_zooms_in_as_far_as_standard():
    light = [h * w for (_, _, h, w), _ in crop_windows("light", [28, 28, 3])]
    standard = [h * w for (_, _, h, w), _ in crop_windows("standard", [28, 28, 3])]
    assert min(light) >= 0.55 * 28 * 28 and min(standard) < 0.45 * 28 * 28


def test_no_augmentation_is_the_evaluation_transform():
    encoded = jpeg(40, 30, seed=4)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        trained, evaluated = session.run((
            augment_module.preprocess_for_train(tf.constant(encoded), 32,
                                                tf.constant([1, 2], tf.int64), "none"),
            eval_preprocessing.preprocess_for_eval(tf.constant(encoded), 32)))
    np.testing.assert_array_equal(trained, evaluated)


@pytest.mark.parametrize("source_side,image_size,expected", [
    (28, 28, "light"), (40, 32, "light"), (100, 64, "light"), (128, 64, "standard"),
    (500, 224, "standard")])
def test_default_augmentation_follows_the_source_and_training_sizes(source_side, image_size,
                                                                     expected):
    assert augment_module.default_augmentation(source_side, image_size) == expected
