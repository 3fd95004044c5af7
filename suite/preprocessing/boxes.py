"""Boxes in images, shared by random erasing and CutMix."""
import tensorflow as tf


def inside_box(height, width, top, left, box_height, box_width):
    """[height, width] booleans, true inside the box (random erasing's and
    CutMix's); all six of one dtype, int or float."""
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    return ((rows >= top) & (rows < top + box_height)
            & (cols >= left) & (cols < left + box_width))
