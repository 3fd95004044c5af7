"""The training graph: the input batches, the learning-rate schedule, the
step (suite.training.step) on one device or on every replica of a
tf.distribute strategy, and the moving average of the weights.

Both builders return the ops the loop runs, as a dict: "train_op", "loss",
"accuracy", "learning_rate", "global_step", "moving_average" (None without
--moving_average_decay), and for the replicated graph also "initializers",
"stop_requested", "step_check", "agreement" and "images_per_step".
"""
import math
import zlib

import tensorflow as tf
import tf_slim as slim

from suite.data.pipeline import graph_fn, make_dataset
from suite.model.checkpoints import MOVING_AVERAGE_NAME
from suite.preprocessing.mixup import mix_batch
from suite.training.step import make_optimizer, training_step


def training_inputs(config, shard=None):
    """The training batches: the input pipeline with the run's per-image
    augmentation, then mixup/CutMix (per batch, when asked for); a dataset
    of (images, targets [N, classes], labels: each image's main class)."""
    dataset = make_dataset(config.data_dir, "train", config.network.image_size,
                           config.optimisation.batch_size, training=True,
                           preprocessing=config.network.manifest()["preprocessing"],
                           augmentation=config.augmentation, seed=config.seed, shard=shard)
    num_classes = len(config.network.labels)

    @graph_fn
    def mixed(images, labels, _):
        targets = tf.one_hot(labels, num_classes)
        images, targets = mix_batch(images, targets, config.augmentation.mixup,
                                    config.augmentation.cutmix)
        return images, targets, tf.argmax(targets, 1, output_type=tf.int32)
    return dataset.map(mixed)


def learning_rate_schedule(optimisation, global_step, steps_per_epoch, total_steps,
                           first_step=0):
    """Linear warm-up (Goyal et al., arXiv 1706.02677), then cosine decay to 0
    (Loshchilov & Hutter, arXiv 1608.03983) or x0.1 steps at 50% and 75%,
    from first_step to total_steps (a stage's; a tensor when the time budget
    moves the end)."""
    step = tf.cast(global_step - first_step, tf.float32)
    length = tf.maximum(1.0, tf.cast(total_steps, tf.float32) - first_step)
    warmup = tf.minimum(float(max(1, round(optimisation.warmup_epochs * steps_per_epoch))),
                        tf.maximum(1.0, length / 2))
    progress = tf.clip_by_value((step - warmup) / tf.maximum(1.0, length - warmup), 0.0, 1.0)
    if optimisation.lr_schedule == "cosine":
        decayed = 0.5 * (1.0 + tf.cos(math.pi * progress))
    else:
        decayed = tf.where(progress < 0.5, 1.0, tf.where(progress < 0.75, 0.1, 0.01))
    ramp = tf.minimum(1.0, (step + 1.0) / warmup)
    return tf.multiply(optimisation.learning_rate, ramp * decayed, name="learning_rate")


def _learning_rate(config, global_step):
    """The schedule of config's stage, and the stage's end it reads: a
    placeholder the loop feeds when the time budget moves it."""
    stage_end = tf.compat.v1.placeholder_with_default(float(config.steps.total_steps), [],
                                                      name="stage_end")
    return learning_rate_schedule(config.optimisation, global_step,
                                  config.steps.steps_per_epoch, stage_end,
                                  config.steps.first_step), stage_end


def build_training_graph(config, batch=None, weight_gradient_limits=None, network=None):
    """The training step on one device. batch: (images, targets, labels)
    tensors to train on (the benchmarks' fixed batch); default: the input
    pipeline, on the CPU, decoding and augmenting the next batches while the
    device runs the step (only the finished batch is copied to a GPU).
    weight_gradient_limits, network: see training_step."""
    if batch is None:
        with tf.device("/cpu:0"):
            batch = tf.compat.v1.data.make_one_shot_iterator(training_inputs(config)).get_next()
    global_step = tf.compat.v1.train.get_or_create_global_step()
    learning_rate, stage_end = _learning_rate(config, global_step)
    optimizer = make_optimizer(config.optimisation, learning_rate, config.precision)
    step = training_step(config, batch, optimizer, global_step,
                         weight_gradient_limits=weight_gradient_limits, network=network)
    return dict({"train_op": step.train_op, "loss": step.loss, "accuracy": step.accuracy,
                 "learning_rate": learning_rate, "global_step": global_step,
                 "stage_end": stage_end},
                **add_moving_average(config.optimisation.moving_average_decay, step.train_op,
                                     global_step))


def build_replicated_training_graph(config, strategy):
    """The training step on every replica of a tf.distribute strategy
    (suite.training.distribute): each replica trains on its own --batch_size
    images, and the update applies the mean of the replicas' gradients to
    every copy of the variables, which keep their single-device names in
    checkpoints.

    Batch norm normalises each replica's batch with its own statistics, as
    TF-slim's clones do, so a step equals one device's on each slice with the
    gradients averaged. The moving statistics are the first replica's (see
    resnet.batch_norm).
    """
    replicas = strategy.num_replicas_in_sync

    def input_fn(context):
        # One pipeline per worker, on its CPU, reading its own share of the
        # shards; the strategy deals its per-replica batches to its replicas.
        return training_inputs(config, shard=(context.input_pipeline_id,
                                              context.num_input_pipelines))

    with strategy.scope():
        # The first collective of the graph, so that it meets its peers'
        # whatever else differs between the workers' graphs.
        agreement = _agreement(config, strategy)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        iterator = strategy.make_input_fn_iterator(input_fn)
        learning_rate, stage_end = _learning_rate(config, global_step)
        optimizer = make_optimizer(config.optimisation, learning_rate, config.precision)
        # Any worker's Ctrl-C or SIGTERM stops every worker after the same step.
        stop_requested = tf.compat.v1.placeholder_with_default(0.0, [], name="stop_requested")
        replica_update_ops = []

        def replica_step(batch):
            step = training_step(config, batch, optimizer, global_step, replicas)
            replica_update_ops.append(step.update_ops)
            # The train op is the replica's scaled loss, whose evaluation
            # runs the update.
            return tf.stack([step.train_op * replicas, step.accuracy, stop_requested])

        per_replica = strategy.experimental_run(replica_step, iterator)
        # One all-reduce for what the loop prints and checks: the mean loss
        # and accuracy, and whether any worker asked to stop.
        metrics = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        averaging = add_moving_average(config.optimisation.moving_average_decay, metrics,
                                       global_step)
        # session.initialize checks that every worker starts from the same step.
        step_check = _summed_moments(strategy, lambda: tf.cast(global_step, tf.float64))
    _check_replicas_apart(replica_update_ops)
    return {"train_op": metrics, "loss": metrics[0], "accuracy": metrics[1],
            "learning_rate": learning_rate, "global_step": global_step,
            "stage_end": stage_end, "initializers": iterator.initialize(),
            "stop_requested": stop_requested,
            "step_check": step_check, "images_per_step": config.global_batch_size,
            "agreement": agreement, **averaging}


def fingerprint(value):
    """A number for a setting, the same on every worker that has the same
    value: 20 bits of its CRC-32, so that the sums of squares of a few
    thousand workers stay exact in float64."""
    return float(zlib.crc32(repr(value).encode("utf-8")) & 0xFFFFF)


def _agreement(config, strategy):
    """The _summed_moments of the fingerprints of config.must_agree()'s
    settings (see suite.training.session.check_agreement)."""
    values = [fingerprint(v) for v in config.must_agree().values()]
    return _summed_moments(strategy, lambda: tf.constant(values, tf.float64))


def _summed_moments(strategy, value):
    """(sum v, sum v^2, n) over the replicas of value() (a float64 tensor,
    each element separately): every replica had the same v exactly when
    n * sum v^2 == (sum v)^2, which each worker can check from the sums alone
    (suite.training.session.differ)."""
    def moments():
        v = value()
        return tf.stack([v, v * v, tf.ones_like(v)])
    return strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.extended.call_for_each_replica(moments), axis=None)


def _check_replicas_apart(replica_update_ops):
    ids = [{op.name for op in ops} for ops in replica_update_ops]
    if len({len(i) for i in ids}) != 1 or len(set().union(*ids)) != sum(map(len, ids)):
        raise RuntimeError("the replicas' batch-norm updates overlap: the replicas were "
                           "built interleaved")


def add_moving_average(decay, train_op, global_step):
    """TF-slim's --moving_average_decay: after each step, a shadow copy of every
    model variable (the weights and the batch-norm statistics) moves towards
    it, decay min(decay, (1 + step) / (10 + step)), so the first steps move
    fast. Returns the ops to add to the graph's: "train_op" (train_op, then
    the averages' update), "moving_average" (the
    tf.compat.v1.train.ExponentialMovingAverage) and "start_moving_averages"
    (sets each average to its variable); only {"moving_average": None} for
    decay 0. Under a tf.distribute strategy, call it in its scope: the
    averages are mirrored like the weights and keep single-device names."""
    if not decay:
        return {"moving_average": None}
    moving_average = tf.compat.v1.train.ExponentialMovingAverage(
        decay, num_updates=global_step, name=MOVING_AVERAGE_NAME)
    variables = slim.get_model_variables()
    # After the step's update, so the averages take in the new weights (the
    # averages' variables are created outside this dependency by apply).
    with tf.control_dependencies([train_op]):
        update = moving_average.apply(variables)
    with tf.control_dependencies([update]):
        train_op = tf.identity(train_op)
    # Plain assignments, each replica's copy from its own: re-running the
    # averages' initialisers instead hangs a cluster of workers (their
    # collective broadcasts never meet).
    start = tf.group(*[moving_average.average(v).assign(v) for v in variables],
                     name="start_moving_averages")
    return {"train_op": train_op, "moving_average": moving_average,
            "start_moving_averages": start}
