"""The head stage's graphs (suite.training.stages): the network's classifier
trained and validated on cached features (suite.training.features).

The classifier is the network's own "resnet/logits" 1x1 conv, applied to the
pooled features: the same variables, so the stage's checkpoints are the whole
network's (its frozen layers as they started) and everything that reads a
model directory reads them unchanged. The network is built once, unused, so
that every variable is in the graph and in its checkpoints.
"""
import numpy as np
import tensorflow as tf
import tf_slim as slim

import resnet
from suite.model.network import build_network
from suite.training.graph import build_training_graph


def classifier(features, num_classes, weight_decay=0.0):
    """The network's logits layer on pooled features [N, D]: [N, classes]."""
    with slim.arg_scope(resnet.resnet_arg_scope(weight_decay)):
        with tf.compat.v1.variable_scope("resnet", reuse=True):
            logits = slim.conv2d(features[:, None, None, :], num_classes, 1, activation_fn=None,
                                 normalizer_fn=None, scope="logits")
    return tf.reshape(logits, [-1, num_classes])


def build_network_variables(config):
    """Every variable of config's network, as training creates them."""
    size = config.network.image_size
    build_network(tf.compat.v1.placeholder(tf.float32, [None, size, size, 3],
                                           name="unused_images"),
                  config.network.manifest(), is_train=False)


def build_head_graph(config, cached):
    """build_training_graph's ops for the head stage (config: its
    stage_config) on cached (features.Features): shuffled batches of the
    training rows, each epoch a new order."""
    build_network_variables(config)
    num_classes = len(config.network.labels)
    rows = _dataset(cached.train, cached.train_labels, config.optimisation.batch_size,
                    shuffle_seed=config.seed)
    features, labels = tf.compat.v1.data.make_one_shot_iterator(rows).get_next()
    batch = (features, tf.one_hot(labels, num_classes), labels)
    return build_training_graph(config, batch, network=lambda inputs: classifier(
        inputs, num_classes, config.optimisation.weight_decay))


def head_validation_inputs(config, cached):
    """(initializer, (features, labels)) of one pass over the cached
    validation rows, for suite.training.validation."""
    rows = _dataset(cached.validation, cached.validation_labels, 1024)
    iterator = tf.compat.v1.data.make_initializable_iterator(rows)
    return iterator.initializer, iterator.get_next()


def _dataset(features, labels, batch_size, shuffle_seed=False):
    """Batches of (float32 features, int32 labels) from the arrays, through
    a generator (embedding them as constants would cap them at 2 GB). With
    shuffle_seed (None: random), shuffled each pass and repeated forever,
    whole batches only; else one pass in order."""
    def batches():
        rng = np.random.default_rng(shuffle_seed)
        while True:
            order = rng.permutation(len(labels)) if shuffle_seed is not False \
                else np.arange(len(labels))
            stop = len(order) - len(order) % batch_size if shuffle_seed is not False \
                else len(order)
            for start in range(0, stop, batch_size):
                chosen = order[start:start + batch_size]
                yield features[chosen].astype(np.float32), labels[chosen]
            if shuffle_seed is False:
                return
    dimension = features.shape[1]
    return tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec([None, dimension], tf.float32),
                                   tf.TensorSpec([None], tf.int32))).prefetch(2)
