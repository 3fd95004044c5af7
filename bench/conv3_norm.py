"""Why the third conv of a bottleneck is batch-normalised (resnet.bottleneck).

    python bench/conv3_norm.py [--steps 300]      # needs data/tfrecords (python FlowIO.py)

The seed leaves batch norm off the third 1x1 conv. This measures both
variants side by side, in one run:
  1. at initialisation, the standard deviation of each stage's output of
     ResNet-152 on random 64 px images (training-mode batch statistics);
  2. layer_14 trained for --steps steps on the demo records with train.py's
     defaults, then its validation top-1.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from suite.plumbing import environment

environment.configure()  # before TensorFlow loads

import numpy as np
import tensorflow as tf
import tf_slim as slim

import resnet
from suite.data.contract import load_dataset_info
from suite.data.pipeline import make_dataset

ORIGINAL_BOTTLENECK = resnet.bottleneck


def seed_bottleneck(input_tensor, output_depth, stride, is_train, scope="bottleneck_v1"):
    """The seed's block: no batch norm on the third conv."""
    with tf.compat.v1.variable_scope(scope):
        shortcut = resnet.depthFilling(resnet.sampling(input_tensor, stride=stride), output_depth)
        params = {"is_training": is_train}
        residual = slim.conv2d(input_tensor, output_depth // 4, 1, normalizer_params=params,
                               scope="conv1")
        residual = resnet.conv2d_same(residual, output_depth // 4, 3, stride, is_train, "conv2")
        residual = slim.conv2d(residual, output_depth, 1, activation_fn=None, normalizer_fn=None,
                               scope="conv3")
        return tf.nn.relu(shortcut + residual)


VARIANTS = {"conv3 normalised (ours)": ORIGINAL_BOTTLENECK, "conv3 plain (seed)": seed_bottleneck}


def activation_scale(block_fn):
    resnet.bottleneck = block_fn
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(0)
        images = tf.constant(np.random.default_rng(0).normal(size=(8, 64, 64, 3)), tf.float32)
        end_points = {}
        with slim.arg_scope(resnet.resnet_arg_scope()):
            resnet.inference(images, resnet.ResNet_demo["layer_152"], 10, True, end_points)
        session.run(tf.compat.v1.global_variables_initializer())
        values = session.run({k: end_points[k] for k in ("block1", "block2", "block3", "block4")})
    return {k: float(v.std()) for k, v in values.items()}


def train_and_validate(block_fn, steps, data_dir="data/tfrecords"):
    resnet.bottleneck = block_fn
    info = load_dataset_info(data_dir)
    num_classes = len(info["classes"])
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(0)
        dataset = make_dataset(data_dir, "train", 32, 32, training=True, seed=0)
        images, labels, _ = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        step = tf.compat.v1.train.get_or_create_global_step()
        logits = resnet.build(images, "layer_14", num_classes, is_train=True)
        loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits) \
            + tf.compat.v1.losses.get_regularization_loss()
        lr = 0.0125 * 0.5 * (1 + tf.cos(np.pi * tf.cast(step, tf.float32) / steps))
        train_op = slim.learning.create_train_op(
            loss, tf.compat.v1.train.MomentumOptimizer(lr, 0.9), global_step=step)
        val = make_dataset(data_dir, "validation", 32, 100, training=False)
        val_images, val_labels, _ = tf.compat.v1.data.make_one_shot_iterator(val).get_next()
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True):
            val_logits = resnet.build(val_images, "layer_14", num_classes, is_train=False)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(val_logits, 1, output_type=tf.int32),
                                                 val_labels), tf.int32))
        session.run(tf.compat.v1.global_variables_initializer())
        start = time.time()
        for _ in range(steps):
            final_loss = session.run(train_op)
        seconds = time.time() - start
        total = right = 0
        while True:
            try:
                c, n = session.run([correct, tf.size(val_labels)])
            except tf.errors.OutOfRangeError:
                break
            right, total = right + c, total + n
    return final_loss, right / total, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print("1. ResNet-152 at initialisation, std of each stage's output (8 random 64 px images)")
    for name, fn in VARIANTS.items():
        scales = activation_scale(fn)
        print(f"   {name:<24} " + "  ".join(f"{k} {v:8.2f}" for k, v in scales.items()))
    print(f"2. layer_14 on the demo records, {args.steps} steps of batch 32, cosine lr 0.0125")
    for name, fn in VARIANTS.items():
        loss, top1, seconds = train_and_validate(fn, args.steps)
        print(f"   {name:<24} final loss {loss:.3f}  validation top-1 {top1:.3f}  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
