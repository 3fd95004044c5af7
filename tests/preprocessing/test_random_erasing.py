"""suite/preprocessing/random_erasing.py: boxes in the paper's area range at
the asked rate, filled with noise, with or without a crop."""

import numpy as np
import tensorflow as tf

from helpers import jpeg
from suite.preprocessing import (augment as augment_module, evaluation as eval_preprocessing,
                                 random_erasing)






def erased_boxes(probability, image_size, seeds=200):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        _, _, box = augment_module.augment(tf.constant([40, 40, 3], tf.int32), "light", seed,
                                   image_size, probability)
        return np.array([session.run(box, {seed: [s, 3 * s + 2]}) for s in range(seeds)])


def test_random_erasing_picks_boxes_in_its_area_range_at_its_rate():
    boxes = erased_boxes(0.5, 28)
    erased = boxes[boxes[:, 2] > 0]
    assert 0.35 < len(erased) / len(boxes) < 0.65
    top, left, height, width = erased.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 28).all() and (left + width <= 28).all()
    areas = height * width / 28 ** 2
    # Whole pixels and the clip at the image's edge move areas a little.
    assert areas.min() >= 0.005 and areas.max() <= random_erasing.ERASING_AREA[1] + 0.05
    assert areas.min() < 0.08 and areas.max() > 0.3  # the range is used
    assert (height > width).any() and (width > height).any()
    assert (erased_boxes(0, 28)[:, 2:] == 0).all() and (erased_boxes(1, 28)[:, 2:] > 0).all()


def test_random_erasing_fills_its_box_with_noise_and_keeps_the_rest():
    encoded = jpeg(28, 28, seed=5)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.constant([11, 12], tf.int64)
        _, _, box = augment_module.augment(tf.io.extract_jpeg_shape(encoded), "light", seed,
                                           28, 1.0)
        plain, erased, again, box = session.run((
            augment_module.preprocess_for_train(tf.constant(encoded), 28, seed, "light"),
            augment_module.preprocess_for_train(tf.constant(encoded), 28, seed, "light",
                                        random_erasing=1.0),
            augment_module.preprocess_for_train(tf.constant(encoded), 28, seed, "light",
                                        random_erasing=1.0),
            box))
    top, left, height, width = box
    inside = np.zeros((28, 28), bool)
    inside[top:top + height, left:left + width] = True
    np.testing.assert_array_equal(erased, again)  # a function of the seed
    np.testing.assert_array_equal(erased[~inside], plain[~inside])
    noise = erased[inside]
    assert not np.isclose(noise, plain[inside]).any()
    assert abs(noise.mean()) < 0.3 and 0.7 < noise.std() < 1.3


def test_random_erasing_applies_without_a_crop_too():
    encoded = jpeg(40, 30, seed=4)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.constant([1, 2], tf.int64)
        erased, evaluated = session.run((
            augment_module.preprocess_for_train(tf.constant(encoded), 32, seed, "none",
                                        random_erasing=1.0),
            eval_preprocessing.preprocess_for_eval(tf.constant(encoded), 32)))
    changed = np.any(erased != evaluated, axis=2)
    assert 0.01 < changed.mean() <= 0.45
