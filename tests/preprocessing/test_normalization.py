"""suite/preprocessing/normalization.py: normalize() takes a model.json's values."""
import numpy as np
import pytest
import tensorflow as tf

from suite.preprocessing import normalization
from suite.training import pretrained


@pytest.mark.parametrize("preprocessing,expected", [
    (None, (np.array([200.0, 100, 50]) - normalization.MEAN_RGB) / normalization.STD_RGB),
    ({}, (np.array([200.0, 100, 50]) - normalization.MEAN_RGB) / normalization.STD_RGB),
    (pretrained.NORMALIZATION, np.array([200.0, 100, 50]) - normalization.MEAN_RGB),
])
def test_normalize_takes_the_manifests_values(preprocessing, expected):
    pixel = tf.constant([[[200.0, 100, 50]]])
    np.testing.assert_allclose(normalization.normalize(pixel, preprocessing).numpy()[0, 0],
                               expected, rtol=1e-6)
