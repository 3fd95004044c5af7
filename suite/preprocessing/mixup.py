"""Batch-level augmentation: mixup (Zhang et al., arXiv 1710.09412) and
CutMix (Yun et al., arXiv 1905.04899), each batch mixed with itself reversed."""
import tensorflow as tf

from suite.preprocessing.boxes import inside_box


def mix_batch(images, targets, mixup, cutmix):
    """Batch-level augmentation: each batch mixed with itself reversed, by
    mixup (Zhang et al., arXiv 1710.09412: a weighted sum of two images) or
    CutMix (Yun et al., arXiv 1905.04899: a box of one pasted into the other);
    with both on, each batch takes one of them at random. The weight comes
    from Beta(alpha, alpha); targets ([N, classes] probabilities) mix with the
    share each image ends up with. alpha 0 turns a method off. (Random ops
    with graph-level seeds: a run with train.py --seed repeats.)"""
    def beta(alpha):
        first, second = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
        return first / (first + second)

    other_images, other_targets = tf.reverse(images, [0]), tf.reverse(targets, [0])

    def with_mixup():
        weight = beta(mixup)
        return (weight * images + (1 - weight) * other_images,
                weight * targets + (1 - weight) * other_targets)

    def with_cutmix():
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        side_share = tf.sqrt(1.0 - beta(cutmix))  # the box covers 1 - weight of the area
        box_h, box_w = tf.round(height * side_share), tf.round(width * side_share)
        centre = tf.random.uniform([2])
        top = tf.clip_by_value(tf.round(centre[0] * height - box_h / 2), 0, height - box_h)
        left = tf.clip_by_value(tf.round(centre[1] * width - box_w / 2), 0, width - box_w)
        inside = inside_box(height, width, top, left, box_h, box_w)
        inside = tf.cast(inside, images.dtype)[None, :, :, None]
        weight = 1.0 - box_h * box_w / (height * width)  # after rounding the box
        return (images * (1 - inside) + other_images * inside,
                weight * targets + (1 - weight) * other_targets)

    if mixup > 0 and cutmix > 0:
        return tf.cond(tf.random.uniform([]) < 0.5, with_mixup, with_cutmix)
    if mixup > 0:
        return with_mixup()
    if cutmix > 0:
        return with_cutmix()
    return images, targets
