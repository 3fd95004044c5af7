"""The compute a training run spends, as the field measures time to accuracy
(DAWNBench, airbench): floating-point operations per image times the images
seen, so runs on different machines compare by work done, not by minutes.

    forward FLOPs   two per multiply-add of the network's convolutions for one
                    image, read off its graph's static shapes (batch norm,
                    ReLU and the shortcuts' additions are left out, as fvcore
                    and the ResNet papers leave them; TensorFlow's profiler,
                    which counts them, gives 10-20% more on our networks)
    training FLOPs  3x the forward pass per image (the backward pass is about
                    twice the forward: Kaplan et al., arXiv 2001.08361, 2.1)
"""
import tensorflow as tf

import resnet

# A training step's forward and backward passes, in forward passes.
TRAINING_PASSES = 3


def forward_flops(model, image_size, num_classes, shortcut="A", stem="imagenet"):
    """Two per multiply-add of the convolutions of one image's forward pass
    through a ResNet_demo network (the logits are a 1x1 convolution too)."""
    graph = tf.Graph()
    with graph.as_default():
        # Never run, but --deterministic refuses to build an unseeded random op
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [1, image_size, image_size, 3])
        resnet.build(images, model, num_classes, is_train=False, shortcut=shortcut,
                     stem_kind=stem)
    multiply_adds = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":  # each output value: kernel height x width x input depth
            height, width, depth_in, _ = op.inputs[1].shape.as_list()
            multiply_adds += height * width * depth_in * op.outputs[0].shape.num_elements()
    return 2 * multiply_adds


def stage_images(stages, step, replicas):
    """The images each stage has trained on by global step `step`:
    [(stage, images)], a stage's batch taken by each replica each step."""
    seen, first = [], 0
    for stage in stages:
        steps = max(0, min(step, stage.end_step) - first)
        seen.append((stage, steps * stage.batch_size * replicas))
        first = stage.end_step
    return seen


def training_flops(seen, forward, num_train):
    """The run's training compute for stage_images' `seen`: each image a
    stage through the network trained on costs TRAINING_PASSES forward
    passes; a stage on cached features cost one forward pass per view of each
    training image to compute them (its classifier's own steps are
    negligible beside it)."""
    total = 0
    for stage, images in seen:
        if stage.cached:
            total += forward * num_train * stage.views if images else 0
        else:
            total += TRAINING_PASSES * forward * images
    return total


def record(flops, images, seconds):
    """model.json's "compute": what train.py's summary line says."""
    return {"pflop": float(f"{flops / 1e15:.4g}"), "images": int(images),
            "minutes": round(seconds / 60, 2),
            "images_per_second": round(images / seconds, 1) if seconds > 0 else None}


def describe(compute):
    return (f"{compute['pflop']:.3g} PFLOP of training compute: {compute['images']:,} images "
            f"in {compute['minutes']:.1f} minutes"
            + (f", {compute['images_per_second']:.0f} images/s"
               if compute["images_per_second"] else ""))
