"""The training step, written once: the network in training mode on a batch,
its loss, and the update of the weights. The single-device graph, each
replica of the replicated graph (suite.training.graph) and the speed
benchmarks (bench/train_speed.py) all build it here.
"""
import collections

import tensorflow as tf
import tf_slim as slim

from suite.model.network import build_network
from suite.plumbing.errors import UserError
from suite.training import cpu_gradients

# What a step gives: the loss and accuracy of its batch; the op that trains
# on it (slim's train op: the loss, scaled by 1/replicas, whose evaluation
# runs the update); and the batch-norm updates it runs with it.
Step = collections.namedtuple("Step", "loss accuracy train_op update_ops")


def make_optimizer(optimisation, learning_rate, precision):
    """Momentum SGD; under float16, with dynamic loss scaling, which keeps
    small gradients from flushing to zero (steps whose gradients overflow
    are skipped)."""
    optimizer = tf.compat.v1.train.MomentumOptimizer(learning_rate, optimisation.momentum)
    if precision.loss_scaling:
        optimizer = tf.compat.v1.mixed_precision.MixedPrecisionLossScaleOptimizer(
            optimizer, "dynamic")
    return optimizer


def training_step(config, batch, optimizer, global_step, replicas=1,
                  weight_gradient_limits=None, network=None):
    """One step of config's network on batch = (images, targets [N, classes],
    labels [N]), in config.precision: its layers in the precision's graph
    dtype, or float32 rewritten to bfloat16 by the session
    (suite.hardware.precision.session_config) for bf16 on a CPU.

    Everything per replica is taken from this call alone, as graph
    collections are shared by all replicas of a strategy: the batch-norm
    updates it added to UPDATE_OPS, and its L2 term, computed from the
    weights as this replica reads them (l2_regularization). With replicas,
    the loss the gradients come from is scaled by 1/replicas, as the
    replicas' gradients are summed: their sum is the mean gradient.
    weight_gradient_limits: the CPU's weight-gradient kernels to use (a
    cpu_gradients.Limits; bench/weight_gradients.py compares them); by
    default the ones measured fastest on this CPU. network: a function from
    the batch's images to logits (the head stage's classifier on cached
    features, suite.training.head); by default config's network.

    Of config.stage (suite.training.stages), when it has one: the network's
    stages it keeps frozen, the variables it trains, and the learning rate
    of the pretrained layers, as a share of the stage's.
    """
    images, targets, labels = batch
    updates = tf.compat.v1.get_collection_ref(tf.compat.v1.GraphKeys.UPDATE_OPS)
    first_update = len(updates)
    first_regularizer = len(tf.compat.v1.losses.get_regularization_losses())
    stage = config.stage
    if network is None:
        with cpu_gradients.faster_weight_gradients(config.precision, weight_gradient_limits):
            logits = build_network(images, config.network.manifest(), is_train=True,
                                   weight_decay=config.optimisation.weight_decay,
                                   compute_dtype=config.precision.graph_dtype,
                                   frozen_stages=stage.frozen_stages if stage else 0)
    else:
        logits = network(images)
    update_ops = updates[first_update:]
    cross_entropy = classification_loss(config, logits, targets)
    to_train = trainable_variables((stage and stage.trainable_scopes)
                                   or config.start.trainable_scopes)
    regularization, terms = l2_regularization(config.optimisation.weight_decay, to_train)
    created = tf.compat.v1.losses.get_regularization_losses()[first_regularizer:]
    if created and len(created) != len(conv_weights(tf.compat.v1.trainable_variables())):
        raise RuntimeError(f"the network regularizes {len(created)} variables, "
                           f"l2_regularization finds {terms}")
    total_loss = tf.add(cross_entropy, regularization, name="total_loss")
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                               labels), tf.float32))
    # create_train_op runs this replica's batch-norm updates with the step.
    # The loop checks the loss for NaN and Inf itself, to stop with the step
    # number. GATE_NONE lets each variable's update start as soon as its own
    # gradient is ready instead of after all gradients of its op (faster on a
    # CPU: BENCHMARKS.md, "Decisions"). Safe with resource variables, whose
    # reads are copied on write, so backprop never sees an updated weight.
    # (slim.learning's gradient_multipliers fails on today's TensorFlow:
    # the pretrained layers' rate is applied here, to their gradients.)
    train_op = slim.training.create_train_op(
        total_loss / replicas, optimizer,
        global_step=global_step, update_ops=update_ops, variables_to_train=to_train,
        transform_grads_fn=scaled_for_pretrained(stage),
        check_numerics=False, gate_gradients=tf.compat.v1.train.Optimizer.GATE_NONE)
    return Step(total_loss, accuracy, train_op, update_ops)


def classification_loss(config, logits, targets):
    """Softmax cross-entropy against the (possibly mixed) targets, label
    smoothing on top, each image weighted by its classes' weights."""
    weights = tf.reduce_sum(targets * tf.constant(config.class_weight_vector), axis=1)
    return tf.compat.v1.losses.softmax_cross_entropy(
        targets, logits, weights=weights,
        label_smoothing=config.optimisation.label_smoothing)


def conv_weights(variables):
    """The conv weights among variables (what the L2 term covers)."""
    # (In a replica other than the first, a mirrored variable's op is its own
    # copy's, "…/weights/replica_1"; its name stays the variable's.)
    return [v for v in variables if v.name.rsplit(":", 1)[0].endswith("/weights")]


def scaled_for_pretrained(stage):
    """The train op's transform of the (gradient, variable) pairs: every
    gradient but the new classifier's times the stage's pretrained_lr_ratio
    (with momentum SGD, the same as that share of the learning rate); None
    when the ratio is 1."""
    if stage is None or stage.pretrained_lr_ratio == 1.0:
        return None

    def scaled(pairs):
        return [(gradient if gradient is None or variable.name.startswith("resnet/logits/")
                 else gradient * stage.pretrained_lr_ratio, variable)
                for gradient, variable in pairs]
    return scaled


def l2_regularization(weight_decay, variables):
    """The L2 term resnet_arg_scope's regularizer adds (weight_decay x
    l2_loss of the conv weights), over the variables trained (for the
    others it is a constant), summed in float32 from the weights as the
    calling replica reads them, so each replica's gradients include it;
    and how many terms it has."""
    weights = conv_weights(variables)
    if not weight_decay or not weights:
        return tf.constant(0.0), 0
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(tf.cast(w, tf.float32))
                                               for w in weights]), name="regularization"), \
        len(weights)


def scopes(text):
    """A comma-separated list of variable scopes -> ["scope/", ...]."""
    return [scope.strip().rstrip("/") + "/" for scope in (text or "").split(",") if scope.strip()]


def trainable_variables(trainable_scopes):
    """The variables to train: all, or those under --trainable_scopes."""
    chosen_scopes = scopes(trainable_scopes)
    variables = tf.compat.v1.trainable_variables()
    if not chosen_scopes:
        return variables
    chosen = [v for v in variables if any(v.op.name.startswith(s) for s in chosen_scopes)]
    if not chosen:
        raise UserError(f"--trainable_scopes {trainable_scopes} matches no variable; "
                        f"scopes look like resnet/block4,resnet/logits")
    return chosen
