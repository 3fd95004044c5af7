"""The training session: opened on this process's devices or on a cluster's
server, its variables initialised or restored (resume, warm start, moving
averages), the Savers of best/, and a cluster's last agreement."""
import contextlib

import tensorflow as tf
import tf_slim as slim

from suite.hardware.precision import session_config as precision_session_config
from suite.model.bookkeeping import MOVING_AVERAGE, RAW
from suite.model.checkpoints import average_name, is_average, list_checkpoints, restore_newest
from suite.plumbing.errors import UserError
from suite.training import distribute
from suite.training.cluster_server import start_server
from suite.training.peer_watch import PeerWatch, WatchedSession
from suite.training.warm_start import warm_start


@contextlib.contextmanager
def open_session(config, strategy):
    """The training session: on this process's devices; in a cluster on this
    task's tf.distribute.Server, once every peer answers, each run watched
    for lost peers, and a lost peer's error said in one line naming it."""
    plan = config.plan
    proto = distribute.session_config(plan, strategy,
                                      precision_session_config(config.xla, config.precision))
    if not plan.multi_worker:
        with tf.compat.v1.Session(config=proto) as session:
            yield session
        return
    server = start_server(plan, proto)
    watch = PeerWatch(plan)
    try:
        with tf.compat.v1.Session(server.target, config=proto) as session:
            yield WatchedSession(session, watch)
    except tf.errors.OpError as error:
        lost = distribute.lost_peer_error(plan, error)
        if lost is None:
            raise
        raise lost from None
    finally:
        watch.stop()


def initialize(config, session, ops, init_checkpoint=None):
    """Initialises the variables, then restores the newest checkpoint of
    --model_dir (or warm-starts from init_checkpoint: --init_checkpoint, or
    the TF-slim weights of --pretrained); returns the checkpoint restored
    (or None) and the step.

    In a cluster every worker does this: the initial values are broadcast
    from the chief, but a checkpoint is read by each worker from --model_dir,
    which they must share; the steps they restored are compared.
    """
    if config.plan.multi_worker:  # before the initializers, whose broadcasts need alike graphs
        check_agreement(config, session.run(ops["agreement"]))
    session.run(tf.compat.v1.global_variables_initializer())
    session.run(ops.get("initializers", []))
    averages = moving_averages(ops)
    weights = [v for v in tf.compat.v1.global_variables() if not is_average(v.op.name)]
    if config.steps.first_step:  # a later stage: its optimiser's slots may be new
        weights = _stored_in_newest(config.model_dir, weights)
    restored = restore_newest(session, tf.compat.v1.train.Saver(weights), config.model_dir)
    if not restored and init_checkpoint:
        warm_start(session, init_checkpoint, config.start.exclude_scopes)
    if averages:
        _start_moving_averages(session, ops, averages, restored)
    step = int(session.run(ops["global_step"]))
    if config.plan.multi_worker:
        total, squares, count = session.run(ops["step_check"])
        if differ(total, squares, count):
            raise UserError(f"the workers start from different steps (this one from {step}, "
                            f"their mean is {total / count:g}): --model_dir must be a folder "
                            f"every worker shares, and so must --init_checkpoint")
    return restored, step


def _stored_in_newest(model_dir, variables):
    """The variables that --model_dir's newest checkpoint holds: where a stage
    begins, the previous stage's checkpoint has no momentum for the
    variables it did not train, which start at zero."""
    found = list_checkpoints(model_dir)
    try:
        stored = tf.train.load_checkpoint(found[0]).get_variable_to_shape_map() if found else None
    except (tf.errors.OpError, ValueError):
        stored = None  # unreadable: restore_newest says so, and tries the previous one
    return variables if stored is None else [v for v in variables if v.op.name in stored]


def check_agreement(config, moments):
    """Ends the run in one line naming what differs between the workers of a
    cluster (config.must_agree()), from the summed moments of their
    fingerprints (suite.training.graph). Workers that disagree would
    otherwise wait for each other's steps forever; every worker computes the
    same sums, so all stop."""
    settings = config.must_agree()
    disagree = [(name, value) for (name, value), different in
                zip(settings.items(), differ(*moments)) if different]
    if disagree:
        raise UserError(
            "the workers differ in " + ", ".join(f"{name} (here {_shown(value)})"
                                                 for name, value in disagree) +
            ": start every worker with the same flags, the same data (one FlowIO.py output "
            "every worker reads) and the same number of devices")


def differ(total, squares, count):
    """Whether the values whose moments over the replicas are (sum v, sum v^2,
    n) were not all the same (elementwise for arrays)."""
    return count * squares != total * total


def _shown(value):
    if isinstance(value, (tuple, list)) and len(value) > 4:
        return f"{len(value)} names: {', '.join(map(str, value[:3]))}, ..."
    return str(value)


def moving_averages(ops):
    """The shadow variables of the moving average, one per model variable
    ([] without --moving_average_decay)."""
    if ops.get("moving_average") is None:
        return []
    return [ops["moving_average"].average(v) for v in slim.get_model_variables()]


def _start_moving_averages(session, ops, averages, restored):
    """The moving averages go on from the checkpoint that holds them. Otherwise
    (a new run, --init_checkpoint, or a checkpoint written without
    --moving_average_decay) they start from the weights as they are now, not
    from the random initial ones they were set to before the restore."""
    stored = tf.train.load_checkpoint(restored).get_variable_to_shape_map() if restored else {}
    if all(average.op.name in stored for average in averages):
        tf.compat.v1.train.Saver(averages).restore(session, restored)
        return
    if restored:
        print(f"{restored} holds no moving averages of the weights: they start from its weights")
    session.run(ops["start_moving_averages"])


def best_savers(moving_average):
    """The Savers of best/, by the weights that validated better: RAW saves the
    variables as they are; MOVING_AVERAGE (with --moving_average_decay, the
    graph's ExponentialMovingAverage) saves each one's moving average under
    the variable's own name. Either way best/ holds plain variables, so its
    readers need nothing special."""
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    weights = {name: v for name, v in variables.items() if not is_average(name)}
    savers = {RAW: tf.compat.v1.train.Saver(weights, max_to_keep=1, save_relative_paths=True)}
    if moving_average is not None:
        savers[MOVING_AVERAGE] = tf.compat.v1.train.Saver(
            {name: variables.get(average_name(name), v) for name, v in weights.items()},
            max_to_keep=1, save_relative_paths=True)
    return savers


def wait_for_everyone(plan, session, ops):
    """A cluster's last collective. A worker that has finished its last step
    may not leave yet: another may still be fetching its share of that step.
    Once this completes here, every worker has entered it, so all are done
    with the steps; the others waited in it while the chief validated and
    saved. Its own end may be cut short by a worker that completed it and
    left first: harmless, as nothing follows."""
    if plan.multi_worker:
        with contextlib.suppress(tf.errors.OpError):
            session.run(ops["step_check"])
