"""Validation during training: top-1 on the validation split after every
--eval_every_epochs, for the raw weights and their moving averages, which of
them is better, and when early stopping stops."""
import tensorflow as tf

from suite.data.pipeline import explain_data_error, make_dataset
from suite.model.bookkeeping import MOVING_AVERAGE, RAW
from suite.model.network import build_network, mirror_average
from suite.training.head import classifier, head_validation_inputs


def build_validation_graph(config, moving_average=None, cached=None):
    """The eval-mode network over the validation split, sharing the weights;
    with moving_average (add_moving_average's), a second one on the same
    images that reads the moving averages instead (a custom getter hands it
    each variable's shadow variable). With cached (the head stage's
    features.Features), the classifier on their validation rows."""
    manifest = config.network.manifest()
    if cached is None:
        with tf.device("/cpu:0"):  # as in training: input on the CPU
            dataset = make_dataset(config.data_dir, "validation", config.network.image_size,
                                   config.optimisation.batch_size, training=False,
                                   preprocessing=manifest["preprocessing"])
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
            images, labels, _ = iterator.get_next()
        initializer = iterator.initializer

        def network():
            return build_network(images, manifest, is_train=False)
    else:
        initializer, (features, labels) = head_validation_inputs(config, cached)

        def network():
            if not manifest["flip_average"]:
                return classifier(features, len(manifest["labels"]))
            # Each row holds the image's features and its mirror image's (features.py).
            plain, mirrored = tf.split(features, 2, axis=1)
            return mirror_average(classifier(plain, len(manifest["labels"])),
                                  classifier(mirrored, len(manifest["labels"])))

    def correct(custom_getter=None):
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True,
                                         custom_getter=custom_getter):
            logits = network()
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                              labels), tf.int32))

    def read_average(getter, name, *args, **kwargs):
        variable = getter(name, *args, **kwargs)
        average = moving_average.average(variable)
        return variable if average is None else average

    correct_by_weights = {RAW: correct()}
    if moving_average is not None:
        correct_by_weights[MOVING_AVERAGE] = correct(read_average)
    return {"init": initializer, "correct": correct_by_weights,
            "count": tf.size(labels)}


def validation_accuracy(session, ops, data_dir):
    """Top-1 over the whole validation split, by weights: {RAW: top-1,
    MOVING_AVERAGE: top-1 (with --moving_average_decay)}. The reader counts
    its records against dataset.json (suite.data.pipeline), so a shard that
    holds fewer or more is an error, not an accuracy over the wrong images."""
    session.run(ops["init"])
    correct = dict.fromkeys(ops["correct"], 0)
    count = 0
    while True:
        try:
            batch_correct, n = session.run([ops["correct"], ops["count"]])
        except tf.errors.OutOfRangeError:
            break
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise explain_data_error(data_dir, "validation", error)
        correct = {weights: correct[weights] + c for weights, c in batch_correct.items()}
        count += n
    return {weights: c / max(count, 1) for weights, c in correct.items()}


def better_weights(top1):
    """The weights that validated better (validation_accuracy's dict); the raw
    ones on a tie, as there is then no reason to prefer the averages."""
    return max(top1, key=lambda weights: (top1[weights], weights == RAW))


def early_stop_due(step, best_step, eval_every, patience):
    """Early stopping's test after the validation at `step`: True once
    `patience` validations (one every eval_every steps) have gone by since
    best_step without beating its top-1. patience 0: never."""
    return bool(patience) and best_step is not None and step - best_step >= patience * eval_every


def continues_after_early_stop(stopped, patience, total_steps):
    """Whether a run that stopped early (stopped: the record in
    validation.json) trains on now: only with more patience or more steps
    than it had. With the same command it would stop again after one more
    validation; --early_stop_patience 0 does not undo a stop either, as a
    re-run that merely forgot the flag would otherwise train on pointlessly."""
    return patience > stopped["patience"] or total_steps > stopped["total_steps"]
