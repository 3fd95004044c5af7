"""One training run, as train.py starts it: the plan of replicas, the
precision, the run's settings (suite.training.config), the graph, the
session and the loop, with the model directory locked while the chief writes
into it."""
import dataclasses
import os
import time

import tensorflow as tf

import resnet
from suite.data.contract import load_dataset_info
from suite.hardware import memory
from suite.hardware.precision import Precision, choose_precision
from suite.model import checkpoints
from suite.model.bookkeeping import BEST_DIR, load_validation, save_validation
from suite.model.manifest import write_manifest
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import folder_lock
from suite.training import compute, distribute, stages, start
from suite.training.config import resolve, stored_manifest
from suite.training.features import features
from suite.training.graph import build_replicated_training_graph, build_training_graph
from suite.training.head import build_head_graph
from suite.training.time_budget import Budget, StageFit
from suite.training.loop import ChiefLoop, replica_loop
from suite.training.session import best_savers, initialize, open_session, wait_for_everyone
from suite.training.summaries import Summaries
from suite.training.validation import build_validation_graph, continues_after_early_stop

LOCK_FILE = ".train.lock"  # in --model_dir, flock()ed by the train.py writing it


def train(args):
    """Trains as train.py's parsed flags say; returns the exit code."""
    plan = distribute.plan(args)
    if not plan.is_chief:  # the chief alone writes into --model_dir
        return _train(args, plan)
    with writer_lock(args.model_dir):
        return _train(args, plan)


def writer_lock(model_dir):
    """Held while train.py writes into model_dir: a second train.py on the
    same folder is refused instead of interleaving its checkpoints with the
    first's. An OS lock, so a killed run leaves no stale lock behind."""
    return folder_lock(
        model_dir, LOCK_FILE, "train.py",
        held=lambda holder: UserError(f"{model_dir} is being trained by {holder}: wait for "
                                      f"it to finish, or train into another --model_dir"),
        cannot_write=lambda error: UserError(
            f"cannot write to --model_dir {model_dir} ({reason(error)}): fix its permissions "
            f"or choose another folder"))


def training_precision(requested, plan):
    """choose_precision for training, except that a cluster of CPU workers
    stays in fp32: oneDNN's bfloat16 rewrite reaches the workers' collective
    all-reduce, which has no bfloat16 kernel on a CPU (the first step fails)."""
    precision = choose_precision(requested)
    if not (plan.multi_worker and precision.rewrite_bf16):
        return precision
    if requested == "bf16":
        raise UserError("--precision bf16 does not run on a cluster of CPU workers (its "
                        "all-reduce has no bfloat16 kernel there): use --precision fp32")
    return Precision("fp32", "CPU", "a cluster of CPU workers: oneDNN's bfloat16 "
                     "rewrite does not cover their collective all-reduce")


def check_memory(model, image_size, stem, batch_size):
    """Refuses an image or batch size whose first step cannot fit in memory,
    before the run starts rather than after the machine starts swapping."""
    blocks = sum(stage["num_blocks"] for stage in resnet.ResNet_demo[model])
    # The small stem keeps the full size where the ImageNet stem shrinks it 4x:
    # its activations are those of an image 4x the side.
    side = image_size * (4 if stem == "small" else 1)
    needed = memory.training_memory_bytes(blocks, side, batch_size)
    available = memory.physical_memory_bytes()
    if needed > 0.9 * available:
        raise UserError(f"{model} at --image_size {image_size} with --batch_size {batch_size} "
                        f"needs about {needed / 1e9:.0f} GB for one training step; this "
                        f"machine has {available / 1e9:.0f} GB: lower --image_size or "
                        f"--batch_size")


def _train(args, plan):
    budget = (Budget(args.time_budget, getattr(args, "started", None)) if args.time_budget
              else None)
    info = load_dataset_info(args.data_dir)
    stored = stored_manifest(args.model_dir)
    # Where the weights start: TF-slim's are fetched into the cache the first
    # time (every worker of a cluster reads them itself); a resumed run
    # continues from its own checkpoints and fetches nothing.
    decision = start.decide(args, info, stored)
    print(decision.why, flush=True)  # the first line: where the weights start, and why
    precision = training_precision(args.precision, plan)
    print(precision, flush=True)  # what this run computes in, and why
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    config = resolve(args, info, plan, precision, decision, stored, has_gpu)
    network = config.network
    device = "GPU" if has_gpu else "CPU"
    if device == "CPU" and not all(stage.cached for stage in config.stages):
        check_memory(network.model, network.image_size, network.stem,  # replicas share it
                     config.optimisation.batch_size * len(plan.local_devices))
    print(f"training {network.model} ({network.stem} stem) at {network.image_size}px "
          f"with {config.augmentation.describe()} on {device}: "
          f"{info['num_examples']['train']} images in {len(network.labels)} classes; "
          f"{stages.describe(config.stages)}")
    if plan.replicated:
        print(f"data-parallel: {plan.describe()}; global batch {config.global_batch_size} "
              f"({config.optimisation.batch_size} per replica), learning rate "
              f"{config.optimisation.learning_rate:.4g}", flush=True)
    if not plan.is_chief:
        return _train_other_worker(config.stage_config(config.stages[0]))
    for index, name in enumerate(network.labels):
        print(f"  {index:3d} {name}: {info['counts'][name]['train']} train, "
              f"{info['counts'][name]['validation']} validation")
    write_manifest(config.model_dir, config.manifest())
    return _train_chief(config, budget)


def _build_graph(config):
    """The training graph of the plan: its strategy (None for one device) and ops."""
    if config.seed is not None:
        tf.compat.v1.set_random_seed(config.seed)
    strategy = distribute.make_strategy(config.plan)
    if strategy is None:
        return None, build_training_graph(config)
    return strategy, build_replicated_training_graph(config, strategy)


def _train_chief(config, budget):
    """The chief's run: each stage not yet trained, in turn (see
    suite.training.stages), each in its own graph and session; then the
    run's training compute, in model.json and a line."""
    started, step = time.time(), _step_reached(config.model_dir)
    patience_from = _what_is_left(config, step, chief=True)
    if patience_from is None:
        return 0
    result, config = _train_stages(config, budget, step, patience_from)
    _account(config, time.time() - started)
    return result


def _train_stages(config, budget, step, patience_from):
    """Trains the stages after `step`: (exit code, the run's config as the
    time budget left it)."""
    speed = None  # of the network's forward pass, as the features measured it
    for index, stage in enumerate(config.stages):
        if stage.end_step <= step:
            continue
        if stage.optional and budget and not _fits(config, budget, speed):
            config = dataclasses.replace(config, stages=config.stages[:index], steps=(
                dataclasses.replace(config.steps, total_steps=config.stages[index - 1].end_step)))
            write_manifest(config.model_dir, config.manifest())
            break
        if len(config.stages) > 1:
            print(f"stage {index + 1} of {len(config.stages)}: "
                  f"{stages.describe(config.stages[index:index + 1], step)}", flush=True)
        result, finished, config, speed = _train_stage(config, index, budget, patience_from)
        if result or not finished:
            return result, config
        step = config.stages[index].end_step
    return 0, config


def _account(config, seconds):
    """Adds this run's images and seconds to the compute model.json keeps
    (a resumed run counts on from the runs before it) and says the total."""
    network = config.network
    step = _step_reached(config.model_dir)
    seen = compute.stage_images(config.stages, step, config.plan.num_replicas)
    forward = compute.forward_flops(network.model, network.image_size, len(network.labels),
                                    network.shortcut, network.stem)
    flops = compute.training_flops(seen, forward, config.data["num_examples"]["train"])
    images = sum(count for _, count in seen)
    before = (config.compute or {}).get("minutes", 0) * 60
    record = compute.record(flops, images, before + seconds)
    write_manifest(config.model_dir, dataclasses.replace(config, compute=record).manifest())
    print(f"compute: {compute.describe(record)} ({forward / 1e9:.3g} GFLOP per image "
          f"forward)", flush=True)


def _fits(config, budget, speed):
    """Whether the time left holds the optional stage through the network
    (suite.training.time_budget); a line says what was decided."""
    counts = config.data["num_examples"]
    fits, epoch = budget.network_stage_fits(counts["train"], counts["validation"], speed)
    if not fits:
        print(f"time budget: {budget.left() / 60:.1f} minutes left, "
              + (f"and an epoch through the network takes about {epoch / 60:.1f}"
                 if epoch else "and the network's speed was not measured (cached features)")
              + ": the run ends with the head", flush=True)
    return fits


def _train_stage(config, index, budget, patience_from):
    """Trains config.stages[index]: (exit code, whether it trained to its
    end, the run's config with the stage's end as trained, the network's
    forward images/s when the stage computed features)."""
    stage = config.stages[index]
    stage_config = config.stage_config(stage)
    cached = features(stage_config, stage, budget) if stage.cached else None
    graph = tf.Graph()
    with graph.as_default():
        if config.seed is not None:
            tf.compat.v1.set_random_seed(config.seed)  # the head's too (_build_graph sets it)
        strategy, ops = ((None, build_head_graph(stage_config, cached)) if cached
                         else _build_graph(stage_config))
        validation = (build_validation_graph(stage_config, ops["moving_average"], cached)
                      if stage_config.steps.eval_every else None)
        saver = tf.compat.v1.train.Saver(max_to_keep=config.steps.keep_checkpoints,
                                         save_relative_paths=True)
        savers = best_savers(ops["moving_average"])
        if not config.plan.multi_worker:
            ops.pop("stop_requested", None)  # one process: a stop needs no agreement
        with open_session(stage_config, strategy) as session:
            restored, step = initialize(stage_config, session, ops, config.start.weights)
            if restored:
                print(f"resuming from {restored} (step {step})")
                saver.recover_last_checkpoints(
                    checkpoints.list_checkpoints(config.model_dir)[::-1])
            moved = _Moved(config, index)
            with Summaries(config.model_dir, graph) as summaries:
                loop = ChiefLoop(stage_config, session, ops, validation, saver, savers,
                                 summaries, fit=_fit(stage_config, index, budget),
                                 replanned=moved)
                result = loop.run(step, patience_from)
            wait_for_everyone(config.plan, session, ops)
    return result, loop.finished, moved.config, cached and cached.images_per_second


def _fit(stage_config, index, budget):
    """The stage's time_budget.StageFit; a stage that others follow ends by
    its plan at the latest, and so does the last with --epochs given."""
    if budget is None:
        return None
    config = stage_config
    last = index == len(config.stages) - 1
    validation_steps = config.data["num_examples"]["validation"] / config.optimisation.batch_size
    return StageFit(budget, config.steps, validation_steps,
                    cap=None if last and not config.epochs_given else config.steps.total_steps)


class _Moved:
    """The run's config as the time budget moves a stage's end (the stages
    after it follow), written to model.json each time."""

    def __init__(self, config, index):
        self.config, self.index = config, index

    def __call__(self, stage_config):
        moved = stages.moved_end(self.config.stages, self.index,
                                 stage_config.steps.total_steps)
        self.config = dataclasses.replace(
            self.config, stages=moved,
            steps=dataclasses.replace(self.config.steps, total_steps=moved[-1].end_step))
        write_manifest(self.config.model_dir, self.config.manifest())


def _step_reached(model_dir):
    """The step of --model_dir's newest checkpoint (0 for a new run)."""
    found = checkpoints.list_checkpoints(model_dir)
    return checkpoints.checkpoint_step(found[0]) if found else 0


def _train_other_worker(config):
    """A worker other than the chief: the same graph and the same steps as
    the chief (every step is collective), writing nothing."""
    with tf.Graph().as_default():
        strategy, ops = _build_graph(config)
        with open_session(config, strategy) as session:
            restored, step = initialize(config, session, ops, config.start.weights)
            if restored:
                print(f"resuming from {restored} (step {step})")
            if _what_is_left(config, step, chief=False) is None:
                wait_for_everyone(config.plan, session, ops)
                return 0
            return replica_loop(config, session, ops, step)


def _what_is_left(config, step, chief):
    """None when the run has nothing left to train (a line says why), else the
    step early stopping's patience counts from: 0, or where an earlier early
    stop ended when this run goes on after it (then its record is removed).
    Every worker decides the same from the same files (--model_dir is shared);
    the chief says how to go on."""
    steps = config.steps
    if step >= steps.total_steps:
        further = ("; raise --epochs to train further"
                   + (", or go on through the network with --fine_tune all"
                      if [stage.name for stage in config.stages] == [stages.HEAD] else ""))
        print(f"already trained to step {step} of {steps.total_steps}"
              + (further if chief else ""))
        return None
    stopped = load_validation(config.model_dir).get("stopped_early")
    if stopped and not continues_after_early_stop(stopped, steps.early_stop_patience,
                                                  steps.total_steps):
        print(f"stopped early at step {stopped['step']}: no better validation top-1 in the "
              f"{stopped['patience']} validations after step {stopped['best_step']} (the "
              f"best, in {os.path.join(config.model_dir, BEST_DIR)}). To train further, raise "
              f"--early_stop_patience above {stopped['patience']} or --epochs above "
              f"{stopped['epochs']:g}" if chief else
              f"stopped early at step {stopped['step']}; the chief says how to go on")
        return None
    if not stopped:
        return 0
    if chief:  # patience counts afresh from the stop
        print(f"continuing after the early stop at step {stopped['step']}")
        save_validation(config.model_dir, {key: value for key, value in
                                           load_validation(config.model_dir).items()
                                           if key != "stopped_early"})
    return stopped["step"]
