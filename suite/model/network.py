"""The network a model directory describes, rebuilt from its model.json:
for training, for validation and every reader, and frozen with its weights
for prediction and the exports."""
import math

import tensorflow as tf

import resnet
from suite.model.checkpoints import restore_chosen
from suite.plumbing.environment import quiet_tf1_notices


def build_network(images, manifest, is_train, **options):
    """The logits of the network model.json describes, on preprocessed images.

    options go to resnet.build (weight_decay, compute_dtype) and may not
    change the network's shape: that comes from the manifest alone.

    With "flip_average" (train.py --flip_average), the eval-mode network
    averages each image's class probabilities with its mirror image's
    (left-right flip, as the training augmentation flips): the logits are
    the log of that mean, so softmax gives the mean back and argmax its best
    class. Being here, it is in validation, Evaluation.py, useModel.py and
    every export alike. It costs twice the computation per image for a few
    tenths of a point of top-1 (BENCHMARKS.md, "Flip average").
    """
    def network(inputs):
        return resnet.build(inputs, manifest["model"], len(manifest["labels"]), is_train,
                            shortcut=manifest.get("shortcut", "A"),
                            stem_kind=manifest.get("stem", "imagenet"), **options)

    if is_train or not manifest.get("flip_average", False):
        return network(images)
    # One pass over the images and their mirror images (a batch twice as
    # long): eval-mode batch norm treats each image on its own.
    plain, mirrored = tf.split(network(tf.concat([images, tf.reverse(images, axis=[2])], 0)), 2)
    return mirror_average(plain, mirrored)


def mirror_average(plain, mirrored):
    """The logits of the mean of two class probabilities: the images' logits
    and their mirror images'. The head stage's validation on cached features
    (suite.training.validation) averages with this too."""
    log_probabilities = tf.stack([tf.nn.log_softmax(plain), tf.nn.log_softmax(mirrored)])
    # log((p + q) / 2), computed without leaving log space (no log(0) = -inf)
    return tf.reduce_logsumexp(log_probabilities, axis=0) - math.log(2.0)


def frozen_network(manifest, model_dir, checkpoint=None, compute_dtype=tf.float32):
    """The eval-mode network with the weights of --checkpoint (as
    restore_chosen takes it) in it as constants: (a GraphDef from preprocessed
    images ("images:0", float32 [N, size, size, 3]) to logits ("logits:0",
    float32), for import_network(); the checkpoint's path).

    Prediction reads its weights once, so they may be constants: TensorFlow
    then folds each batch norm into its conv, and under a lower precision
    converts the weights once instead of at every batch. On a 2-core AVX-512
    CPU that made fp32 prediction 1.1-2.3x and bf16 prediction 1.5-2.5x as
    fast as the network with variables (BENCHMARKS.md, "Precision"); without
    it, bf16 was slower than fp32 at small batches. The graph is built from
    code and only the checkpoint's variables are read, as in restore().

    Why constants are faster: oneDNN keeps a conv's filter in its own layout
    only when the filter is a Const node; from a variable it lays the filter
    out again at every run (single images of ResNet-50 at 224 px: about 1.2x
    the time; batches of 32: about the same). The price is memory: TensorFlow
    holds constants several times over (the graph's copy, the session's, its
    optimiser's passes, the kernels', oneDNN's re-laid-out filters), so
    ResNet-50 at 224 px peaks at about 1.9 GB where restored variables take
    0.7 GB (BENCHMARKS.md, "Serving runtimes").
    """
    size = manifest["image_size"]
    graph = tf.Graph()
    with graph.as_default(), quiet_tf1_notices():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="images")
        logits = build_network(images, manifest, is_train=False, compute_dtype=compute_dtype)
        tf.identity(logits, name="logits")
        with tf.compat.v1.Session(graph=graph) as session:
            checkpoint = restore_chosen(session, model_dir, checkpoint)
            return tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["logits"]), checkpoint


def import_network(network, images):
    """The logits of a frozen_network() GraphDef on `images`, in the current graph."""
    return tf.graph_util.import_graph_def(network, input_map={"images:0": images},
                                          return_elements=["logits:0"], name="network")[0]


def network_probabilities(images, manifest, compute_dtype=tf.float32):
    """Softmax of the eval-mode network on preprocessed images [N, size, size, 3]."""
    logits = build_network(images, manifest, is_train=False, compute_dtype=compute_dtype)
    return tf.nn.softmax(logits, name="probabilities")
