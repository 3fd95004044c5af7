"""How pixels are normalised for the network: the one place that says it."""
import tensorflow as tf

# In 0..255 units: ImageNet's per-channel mean and standard deviation. A
# model's own values are in its model.json ("preprocessing"); these are what
# train.py records for a model trained from scratch, and what normalize()
# takes where a model.json has none.
MEAN_RGB = (123.68, 116.78, 103.94)
STD_RGB = (58.40, 57.12, 57.38)


def normalize(image, preprocessing=None):
    """float RGB in 0..255 -> the network's input scale: (image - mean_rgb) / std_rgb.

    preprocessing is a model.json's "preprocessing" (suite.model.manifest
    checks its values); a key it lacks, or None, means ImageNet's mean and
    std (MEAN_RGB, STD_RGB). A model started from TF-slim's checkpoints
    records std_rgb (1, 1, 1): slim's VGG preprocessing, which they were
    trained with, only subtracts the mean.
    """
    preprocessing = preprocessing or {}
    mean = tf.constant(preprocessing.get("mean_rgb", MEAN_RGB), tf.float32)
    std = tf.constant(preprocessing.get("std_rgb", STD_RGB), tf.float32)
    return (image - mean) / std
