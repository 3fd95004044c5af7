"""Bottleneck ResNet-50/101/152 in TensorFlow 1 style (tf.compat.v1 + tf-slim).

The network of the blog post this suite grew from, which reimplements
ResNet-152 in TensorFlow 1 ("the post" below), built from its dictionary
`ResNet_demo`, with the post's bugs fixed so it runs on today's TensorFlow:

    import tensorflow as tf, resnet
    images = tf.compat.v1.placeholder(tf.float32, [None, 224, 224, 3])
    with tf_slim.arg_scope(resnet.resnet_arg_scope()):
        logits = resnet.inference(images, resnet.ResNet_demo["layer_50"],
                                  num_output=10, is_train=False)

Layout (He et al., "Deep Residual Learning for Image Recognition",
arXiv 1512.03385, table 1, and TF-slim's resnet_v1):
  stem     "imagenet" (the post's, for photos): 7x7/2 conv, 64 channels ->
           3x3/2 max pool, a 4x smaller map; "small" (for images of a few
           dozen pixels, as the paper's CIFAR-10 networks, section 4.2):
           one 3x3/1 conv, 64 channels, and no pool, so a 28-px image is not
           down to 7x7 before the first block
  stages   4 stages of bottleneck blocks 1x1 (depth/4) -> 3x3 (depth/4) -> 1x1 (depth);
           the LAST block of stages 1-3 carries stride 2 (as slim's resnet_v1_block)
  shortcut option A of the paper (the post's, the default): the input,
           zero-padded to the new depth and sampled by a strided 1x1 max pool --
           no extra weights. Options B (a 1x1 projection where the depth
           changes) and C (projections everywhere) are there for transfer
           learning: with B the variables are TF-slim's resnet_v1_50/101/152,
           name for name, so its published ImageNet checkpoints load.
  head     [option A: batch norm + ReLU] -> global average pool -> 1x1 conv logits

A key "layer_N" builds exactly N weight layers: the stem conv, three convs per
block and the logits conv (50 = 1 + 3 * (3 + 4 + 6 + 3) + 1); "_half" halves
every stage's depth, a quarter of the compute.
"""
import warnings

import tensorflow as tf
import tf_slim as slim

# tf-slim's layers still call the deprecated `layer.apply`; one warning per
# conv would bury the user's output.
warnings.filterwarnings("ignore", message=".*layer.apply.*is deprecated")

# The one place each depth is defined: per stage, its output depth and how many
# bottleneck blocks it stacks (the post calls that count "num_class").
ResNet_demo = {
    # One block per stage: the small configuration for the demo and the tests.
    "layer_14": [{"depth": 256, "num_blocks": 1}, {"depth": 512, "num_blocks": 1},
                 {"depth": 1024, "num_blocks": 1}, {"depth": 2048, "num_blocks": 1}],
    # layer_14 at half the depths: the default for small images, where 2.7x as
    # many images per second buy more passes over the data in the same time.
    "layer_14_half": [{"depth": 128, "num_blocks": 1}, {"depth": 256, "num_blocks": 1},
                      {"depth": 512, "num_blocks": 1}, {"depth": 1024, "num_blocks": 1}],
    "layer_50": [{"depth": 256, "num_blocks": 3}, {"depth": 512, "num_blocks": 4},
                 {"depth": 1024, "num_blocks": 6}, {"depth": 2048, "num_blocks": 3}],
    "layer_101": [{"depth": 256, "num_blocks": 3}, {"depth": 512, "num_blocks": 4},
                  {"depth": 1024, "num_blocks": 23}, {"depth": 2048, "num_blocks": 3}],
    "layer_152": [{"depth": 256, "num_blocks": 3}, {"depth": 512, "num_blocks": 8},
                  {"depth": 1024, "num_blocks": 36}, {"depth": 2048, "num_blocks": 3}],
}

STEM_DEPTH = 64
BATCH_NORM_DECAY = 0.99
BATCH_NORM_EPSILON = 1e-5


def batch_norm(inputs, is_training, decay=BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
               scope="BatchNorm"):
    """Fused batch norm with moving statistics, usable as slim's normalizer_fn.

    slim.batch_norm and tf.compat.v1.layers.batch_normalization no longer run
    on TF 2.21, so this is the same computation on the fused kernel, with
    slim's variable names (BatchNorm/beta, gamma, moving_mean,
    moving_variance) so checkpoints keep the familiar layout.

    The flag is called is_training, not is_train as elsewhere in this file,
    because that is the keyword slim's layers and nets pass to a normalizer_fn
    (normalizer_params={"is_training": ...}).

    Training normalises with the batch statistics and adds the moving-average
    updates to tf.GraphKeys.UPDATE_OPS (slim's create_train_op runs them);
    inference normalises with the moving statistics.
    """
    with tf.compat.v1.variable_scope(scope):
        depth = inputs.get_shape().as_list()[-1]
        beta = tf.compat.v1.get_variable(
            "beta", [depth], initializer=tf.compat.v1.zeros_initializer())
        gamma = tf.compat.v1.get_variable(
            "gamma", [depth], initializer=tf.compat.v1.ones_initializer())
        # Under a tf.distribute strategy (train.py with several replicas) each
        # replica updates its own copy of the moving statistics from its own
        # batch, with no communication, and a read outside the replicas
        # (validation, a checkpoint) takes the first replica's: TF-slim's
        # model_deploy keeps the first clone's the same way. Without a
        # strategy these settings change nothing.
        statistics = dict(trainable=False, collections=[
            tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
            tf.compat.v1.GraphKeys.MODEL_VARIABLES,
            tf.compat.v1.GraphKeys.MOVING_AVERAGE_VARIABLES],
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        moving_mean = tf.compat.v1.get_variable(
            "moving_mean", [depth], initializer=tf.compat.v1.zeros_initializer(),
            **statistics)
        moving_variance = tf.compat.v1.get_variable(
            "moving_variance", [depth], initializer=tf.compat.v1.ones_initializer(),
            **statistics)
        if not is_training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, is_training=False)
            return outputs
        outputs, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=epsilon, is_training=True)
        global_step = tf.compat.v1.train.get_global_step()
        if global_step is not None:
            # Early in training the statistics move fast, as in
            # tf.train.ExponentialMovingAverage's num_updates: with a fixed 0.99
            # the moving statistics of a short run still remember their
            # initial values and validation accuracy sits at chance.
            step = tf.cast(global_step, tf.float32)
            decay = tf.minimum(decay, (1.0 + step) / (10.0 + step))
        for moving, batch in ((moving_mean, batch_mean), (moving_variance, batch_variance)):
            update = tf.compat.v1.assign_sub(moving, (moving - batch) * (1.0 - decay))
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
        return outputs


def resnet_arg_scope(weight_decay=1e-4):
    """Layer defaults for every conv in the network (as slim's resnet_arg_scope).

    He initialisation (arXiv 1502.01852) for ReLU networks, L2 weight decay,
    batch norm + ReLU after each conv unless a call says otherwise.
    """
    with slim.arg_scope(
            [slim.conv2d],
            weights_initializer=tf.compat.v1.variance_scaling_initializer(scale=2.0),
            weights_regularizer=slim.l2_regularizer(weight_decay),
            activation_fn=tf.nn.relu,
            normalizer_fn=batch_norm) as scope:
        return scope


def conv2d_same(inputs, num_outputs, kernel_size, stride, is_train, scope):
    """A conv whose output size does not depend on how TF pads a strided conv.

    With stride 1 this is a plain 'SAME' conv. With stride 2, 'SAME' padding
    would pad only on the bottom/right for even inputs and shift the grid by
    half a pixel against the 1x1 max-pool shortcut; padding explicitly by
    (k-1)/2 on both sides and convolving 'VALID' keeps both aligned on pixels
    0, 2, 4, ... (the helper the post calls but never defines; slim's
    resnet_utils.conv2d_same does the same).
    """
    normalizer_params = {"is_training": is_train}
    if stride == 1:
        return slim.conv2d(inputs, num_outputs, kernel_size, stride=1, padding="SAME",
                           normalizer_params=normalizer_params, scope=scope)
    pad_total = kernel_size - 1
    pad_begin = pad_total // 2
    inputs = tf.pad(inputs, [[0, 0], [pad_begin, pad_total - pad_begin],
                             [pad_begin, pad_total - pad_begin], [0, 0]])
    return slim.conv2d(inputs, num_outputs, kernel_size, stride=stride, padding="VALID",
                       normalizer_params=normalizer_params, scope=scope)


def sampling(input_tensor, ksize=1, stride=2):
    """Spatial subsampling of the shortcut: a strided 1x1 max pool picks pixels
    0, stride, 2*stride, ... -- the positions the strided 3x3 conv centres on."""
    if stride == 1:
        return input_tensor
    return slim.max_pool2d(input_tensor, ksize, stride=stride, padding="SAME")


def depthFilling(input_tensor, depth):
    """Zero-pads the channels of input_tensor up to `depth` (option A shortcut).

    [N, H, W, C] -> [N, H, W, depth]: the input channels sit in the middle,
    (depth - C) // 2 zero channels before them and the rest after (the post
    padded (depth - C) // 2 on both sides, one channel short for odd
    differences).
    """
    input_depth = input_tensor.get_shape().as_list()[3]
    if depth < input_depth:
        raise ValueError(f"depthFilling cannot shrink {input_depth} channels to {depth}")
    if depth == input_depth:
        return input_tensor
    before = (depth - input_depth) // 2
    return tf.pad(input_tensor, [[0, 0], [0, 0], [0, 0], [before, depth - input_depth - before]])


SHORTCUTS = ("A", "B", "C")
STEMS = ("imagenet", "small")


def stem(input_tensor, kind, is_train):
    """The layers before the first block (see the module docstring)."""
    if kind == "imagenet":
        data = conv2d_same(input_tensor, STEM_DEPTH, 7, 2, is_train, scope="conv1")
        return slim.max_pool2d(data, 3, stride=2, padding="SAME", scope="pool1")
    return conv2d_same(input_tensor, STEM_DEPTH, 3, 1, is_train, scope="conv1")


def bottleneck(input_tensor, output_depth, stride, is_train, shortcut="A",
               scope="bottleneck_v1"):
    """One bottleneck block: relu(shortcut(x) + F(x)).

    shortcut "A": x sampled at the stride and zero-padded to output_depth.
    "B": the same where the depth is unchanged, else a 1x1 conv with batch
    norm and the block's stride (slim's resnet_v1 bottleneck). "C": always
    that projection.

    F is 1x1 (depth/4) -> 3x3 (depth/4, carries the stride) -> 1x1 (depth).
    The third conv is batch-normalised but not activated. The post leaves
    batch norm off it; bench/conv3_norm.py measured both (BENCHMARKS.md,
    "Batch norm on the third conv"): the same stage-output scale at
    initialisation and the same demo accuracy, so the measurement does not
    decide.
    We keep it, as the paper and slim's resnet_v1 do, because then shortcut
    option B is slim's network and its ImageNet checkpoints load.
    """
    normalizer_params = {"is_training": is_train}
    with tf.compat.v1.variable_scope(scope):
        depth_in = input_tensor.get_shape().as_list()[3]
        if shortcut == "A" or (shortcut == "B" and depth_in == output_depth):
            # Sample first (cheaper), then zero-pad the channels (a no-op for B).
            identity = depthFilling(sampling(input_tensor, stride=stride), output_depth)
        else:
            identity = slim.conv2d(input_tensor, output_depth, 1, stride=stride,
                                   activation_fn=None, normalizer_params=normalizer_params,
                                   scope="shortcut")
        residual = slim.conv2d(input_tensor, output_depth // 4, 1, stride=1,
                               normalizer_params=normalizer_params, scope="conv1")
        residual = conv2d_same(residual, output_depth // 4, 3, stride, is_train, scope="conv2")
        residual = slim.conv2d(residual, output_depth, 1, stride=1, activation_fn=None,
                               normalizer_params=normalizer_params, scope="conv3")
        return tf.nn.relu(identity + residual)


def block_strides(demos):
    """The stride of every block, stage by stage: 2 on the last block of every
    stage but the last, 1 elsewhere (the post's rule, slim's resnet_v1_block)."""
    return [[2 if (stage < len(demos) - 1 and block == demo["num_blocks"] - 1) else 1
             for block in range(demo["num_blocks"])]
            for stage, demo in enumerate(demos)]


def inference(input_tensor, demos, num_output, is_train, end_points=None, shortcut="A",
              stem_kind="imagenet", frozen_stages=0):
    """Logits [batch, num_output] of the ResNet described by `demos`.

    input_tensor: float images [batch, height, width, 3], already preprocessed
      (suite.preprocessing). The batch size may be unknown.
    demos: a list of stages from ResNet_demo, e.g. ResNet_demo["layer_50"].
    is_train: Python bool; True uses batch statistics and adds the moving
      average updates to UPDATE_OPS.
    end_points: optional dict, filled with the stem, stage and pooled outputs
      ("stem", "block1".."block4", "pool") for inspection and tests.
    shortcut: "A" (the post's), "B" or "C"; see bottleneck(). B and C follow
      slim's resnet_v1 to the letter, which has no batch norm before pooling.
    stem_kind: "imagenet" (the post's) or "small"; see stem().
    frozen_stages: for fine-tuning: the stem and the first frozen_stages
      stages (all of them: the post-norm too) run in inference mode whatever
      is_train says, so their batch norm keeps the statistics it was
      trained with (train.py's stages through the network keep all).
    Build it inside `slim.arg_scope(resnet_arg_scope())`.
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if stem_kind not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem_kind!r}")
    if end_points is None:
        end_points = {}
    with tf.compat.v1.variable_scope("resnet"):
        data = stem(input_tensor, stem_kind, is_train and frozen_stages == 0)
        end_points["stem"] = data
        for stage, (demo, strides) in enumerate(zip(demos, block_strides(demos)), start=1):
            trains = is_train and stage > frozen_stages
            with tf.compat.v1.variable_scope(f"block{stage}"):
                for unit, stride in enumerate(strides, start=1):
                    with tf.compat.v1.variable_scope(f"unit_{unit}"):
                        data = bottleneck(data, demo["depth"], stride, trains, shortcut)
            end_points[f"block{stage}"] = data
        if shortcut == "A":
            # The post's head: a last batch norm + ReLU before pooling.
            data = tf.nn.relu(batch_norm(data, is_train and frozen_stages < len(demos),
                                         scope="postnorm"))
        data = tf.reduce_mean(data, [1, 2], keepdims=True)
        end_points["pool"] = data
        data = slim.conv2d(data, num_output, 1, activation_fn=None, normalizer_fn=None,
                           scope="logits")
        return tf.reshape(data, [-1, num_output], name="logits_flat")


def _float32_variables(getter, name, shape=None, dtype=None, *args, **kwargs):
    """Mixed precision: layers asking for float16 or bfloat16 weights get
    float32 variables read through a cast, so updates keep full precision
    (Micikevicius et al., arXiv 1710.03740)."""
    if dtype in (tf.float16, tf.bfloat16):
        return tf.cast(getter(name, shape, tf.float32, *args, **kwargs), dtype)
    return getter(name, shape, dtype, *args, **kwargs)


def build(images, model, num_output, is_train, weight_decay=1e-4, shortcut="A",
          stem_kind="imagenet", compute_dtype=tf.float32, frozen_stages=0, end_points=None):
    """inference() for the configuration named `model` (a ResNet_demo key),
    inside the network's arg_scope: what the scripts call.

    compute_dtype: tf.float16 or tf.bfloat16 computes the layers in that type
    (float32 variables, batch-norm statistics and logits): what a GPU's
    tensor cores run fast (suite.hardware.precision says when).
    frozen_stages, end_points: as inference() takes them.
    """
    if model not in ResNet_demo:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(ResNet_demo)}")
    compute_dtype = tf.as_dtype(compute_dtype)
    with slim.arg_scope(resnet_arg_scope(weight_decay)):
        if compute_dtype == tf.float32:
            return inference(images, ResNet_demo[model], num_output, is_train, end_points,
                             shortcut, stem_kind, frozen_stages)
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(),
                                         custom_getter=_float32_variables):
            logits = inference(tf.cast(images, compute_dtype), ResNet_demo[model], num_output,
                               is_train, end_points, shortcut, stem_kind, frozen_stages)
        return tf.cast(logits, tf.float32)


if __name__ == "__main__":
    # `python resnet.py` builds the post's three configurations and prints their size.
    for key in ("layer_50", "layer_101", "layer_152"):
        with tf.Graph().as_default():
            images = tf.compat.v1.placeholder(tf.float32, [None, 224, 224, 3])
            logits = build(images, key, 1000, is_train=False)
            weights = [v for v in tf.compat.v1.trainable_variables()
                       if v.name.endswith("weights:0")]
            params = sum(v.shape.num_elements() for v in tf.compat.v1.trainable_variables())
            print(f"{key}: {len(weights)} weight layers, {params:,} trainable parameters, "
                  f"logits {logits.shape}")
