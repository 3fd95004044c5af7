"""suite/preprocessing/mixup.py: mixup and CutMix mix images and targets by the
same weight; off, nothing changes."""
import numpy as np
import tensorflow as tf

from suite.preprocessing.mixup import mix_batch


def mix(mixup, cutmix, batch=4, size=8, classes=3):
    images = np.stack([np.full((size, size, 1), float(i)) for i in range(batch)]).astype(np.float32)
    targets = np.eye(classes, dtype=np.float32)[np.arange(batch) % classes]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(3)
        mixed = mix_batch(tf.constant(images), tf.constant(targets), mixup, cutmix)
        return images, targets, session.run(mixed)


def test_mixup_mixes_images_and_targets_by_the_same_weight():
    images, targets, (mixed, mixed_targets) = mix(mixup=0.4, cutmix=0)
    # Image i is i everywhere, mixed with image batch-1-i: recover the weight.
    weight = (mixed[0, 0, 0, 0] - 3.0) / (0.0 - 3.0)
    np.testing.assert_allclose(mixed[0], weight * images[0] + (1 - weight) * images[3], atol=1e-5)
    np.testing.assert_allclose(mixed_targets[0], weight * targets[0] + (1 - weight) * targets[3],
                               atol=1e-5)
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, atol=1e-5)


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area():
    images, targets, (mixed, mixed_targets) = mix(mixup=0, cutmix=1.0)
    pasted = np.mean(mixed[0] == images[3])  # image 0 gets a box of image 3
    assert set(np.unique(mixed[0])) <= {0.0, 3.0}
    np.testing.assert_allclose(mixed_targets[0], (1 - pasted) * targets[0] + pasted * targets[3],
                               atol=1e-5)


def test_mixing_off_changes_nothing():
    images, targets, (mixed, mixed_targets) = mix(mixup=0, cutmix=0)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(mixed_targets, targets)
