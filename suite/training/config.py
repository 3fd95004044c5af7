"""The settings of one training run, in one object: resolved once from
train.py's flags, the data (dataset.json) and the model directory (its
model.json when resuming), passed whole to everything that builds or runs
the training, and written to model.json (manifest()).

The defaults train.py's flags show are the fields' defaults here; what
depends on the data (network, image size, epochs, learning rate) is decided
by the functions below, each citing the measurement behind it.
"""
import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

import resnet
from suite.images.eval_transform import eval_crop
from suite.model import checkpoints
from suite.model.manifest import load_manifest
from suite.plumbing.errors import UserError
from suite.preprocessing.augment import Augmentation, default_augmentation
from suite.preprocessing.normalization import MEAN_RGB, STD_RGB
from suite.training import distribute, pretrained, stages as staging

# The default network for each stem (default_stem): for small images, layer_14
# at half the depths trains 2.7x as many images per second, and the passes
# that buys won over layer_14 in the same time (BENCHMARKS.md, "Decisions").
DEFAULT_MODELS = {"imagenet": "layer_14", "small": "layer_14_half"}
# Far above 4096 px a step fits in no memory; below 16 px there is nothing to learn.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
# Images up to this side train at their own size with the small stem
# (resnet.stem): the ImageNet stem would leave a 28-px image 7x7 before the
# first block (BENCHMARKS.md, "Decisions").
SMALL_IMAGE_SIDE = 32
# The default length of training, in images shown per network: small sets
# need many passes, large ones learn as much from fewer; a cheaper network
# gets more in the same time (BENCHMARKS.md, "Accuracy"). Networks not
# listed get layer_14's.
DEFAULT_TRAINING_IMAGES = {"layer_14": 300_000, "layer_14_half": 1_400_000}
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 10, 30
# The default peak learning rate per 256 images of global batch, scaled
# linearly with the batch (Goyal et al., arXiv 1706.02677): ImageNet's 0.1
# for photos; for small images twice that, the ResNet paper's CIFAR-10
# recipe (0.1 at batch 128): at 0.1 Fashion-MNIST underfitted in a short
# run (BENCHMARKS.md, "Decisions").
BASE_LEARNING_RATE = {"imagenet": 0.1, "small": 0.2}
# A start from published weights (suite.training.start): TF-slim's
# resnet_v1_50 at ImageNet's training size, where its features were learnt.
PRETRAINED_MODEL, PRETRAINED_IMAGE_SIZE = "layer_50", 224


@dataclasses.dataclass(frozen=True)
class Network:
    """What model.json needs to rebuild the network and prepare its pixels
    (nanoGPT's model_args): resnet.py's configuration, the class names, the
    TF-slim weights it started from, the pixel normalisation, and whether
    predictions average each image with its mirror image."""
    model: str
    shortcut: str
    stem: str
    image_size: int
    labels: tuple
    pretrained: str = None
    mean_rgb: tuple = MEAN_RGB
    std_rgb: tuple = STD_RGB
    flip_average: bool = False

    def manifest(self, max_side=None):
        """model.json's description of this network (what every reader,
        and suite.model.network.build_network, takes)."""
        return {"model": self.model, "num_classes": len(self.labels),
                "image_size": self.image_size, "shortcut": self.shortcut, "stem": self.stem,
                "pretrained": self.pretrained, "flip_average": self.flip_average,
                "labels": list(self.labels),
                "preprocessing": {"mean_rgb": list(self.mean_rgb), "std_rgb": list(self.std_rgb),
                                  "eval_crop": eval_crop(self.image_size),
                                  "max_side": max_side}}


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """Momentum SGD with a warm-up and a decay; train.py's flags of the same
    names. epochs and learning_rate None: decided by the data and the batch."""
    batch_size: int = 64  # per replica
    epochs: float = None
    learning_rate: float = None  # the peak, for the global batch
    lr_schedule: str = "cosine"
    warmup_epochs: float = 2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    # "none" by measurement: with five classes at a tenth of the others'
    # frequency, "balanced" moved recall from the frequent classes to the
    # rare ones without raising macro-recall (BENCHMARKS.md, "Decisions").
    class_weights: str = "none"
    # 0 keeps no average: no better at the end of a cosine schedule
    # (BENCHMARKS.md, "Decisions").
    moving_average_decay: float = 0.0


@dataclasses.dataclass(frozen=True)
class Steps:
    """The run's length and rhythm, in steps of the global batch."""
    steps_per_epoch: int
    total_steps: int
    save_every: int           # a checkpoint every this many steps...
    save_every_secs: float    # ...and at least this often
    eval_every: int           # a validation every this many steps; 0: none
    log_every: int            # a progress line (when not on a terminal)
    keep_checkpoints: int
    early_stop_patience: int  # validations without a better top-1; 0: never stop
    first_step: int = 0       # where the stage these steps are of begins
    eval_every_epochs: float = 1  # train.py's flags, for each stage's own rhythm
    save_every_steps: int = None


@dataclasses.dataclass(frozen=True)
class Start:
    """Where the weights start when there is no checkpoint to resume: a
    checkpoint (TF-slim's train_image_classifier.py flags) or TF-slim's
    ImageNet weights (pretrained_cache: where they are kept); how they are
    fine-tuned (suite.training.stages), and why (suite.training.start)."""
    init_checkpoint: str = None
    exclude_scopes: str = "resnet/logits"
    trainable_scopes: str = None
    pretrained_cache: str = None
    pretrained: str = "auto"   # train.py's flag
    weights: str = None        # the checkpoint a new run loads; None: random weights
    why: str = None            # train.py's first line
    fine_tune: str = None      # the flag as resolved; None from random weights


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data_dir: str
    model_dir: str
    network: Network
    augmentation: Augmentation
    optimisation: Optimisation
    steps: Steps
    start: Start
    precision: object           # suite.hardware.precision.Precision
    plan: object                # suite.training.distribute.Plan
    class_weight_vector: tuple  # each class's loss weight, in label order
    data: dict                  # dataset.json's record of the data (model.json's "data")
    max_side: int = None        # FlowIO.py's --max_side, which readers apply too
    resuming: bool = False
    seed: int = None
    xla: bool = False
    stages: tuple = ()          # suite.training.stages.Stage, in order
    stage: object = None        # the stage being trained (stage_config)
    time_budget: float = None   # minutes (suite.training.time_budget)
    epochs_given: bool = False  # train.py's --epochs (with a time budget: the most)
    compute: dict = None        # the training compute so far (suite.training.compute)

    @property
    def global_batch_size(self):
        return self.optimisation.batch_size * self.plan.num_replicas

    def must_agree(self):
        """What every worker of a cluster must have alike, by what a user would
        change to fix it; the workers compare it before their first step
        (suite.training.graph)."""
        network, optimisation = self.network, self.optimisation
        return {"--model": network.model, "--stem and --shortcut": (network.stem,
                                                                     network.shortcut),
                "--image_size": network.image_size, "the class list": network.labels,
                "--batch_size": optimisation.batch_size,
                "the devices per worker": len(self.plan.local_devices),
                "the number of steps (--epochs)": self.steps.total_steps,
                "--precision": self.precision.name,
                "the images per split (dataset.json)": self.data.get("num_examples")}

    def manifest(self):
        """model.json: the network's description, and how it was trained."""
        return dict(self.network.manifest(self.max_side),
                    augmentation=self.augmentation.record(),
                    data=self.data, tensorflow=tf.__version__,
                    precision=self.precision._asdict(), training=self.training_record(),
                    compute=self.compute)

    def training_record(self):
        """model.json's "training": the optimisation, the rhythm and the start,
        with what the defaults resolved to."""
        return dict(dataclasses.asdict(self.optimisation), **dataclasses.asdict(self.steps),
                    **dataclasses.asdict(self.start), seed=self.seed, xla=self.xla,
                    global_batch_size=self.global_batch_size,
                    replicas=self.plan.num_replicas, workers=self.plan.num_workers,
                    stages=staging.record(self.stages), time_budget=self.time_budget)

    def stage_config(self, stage):
        """This RunConfig for training `stage` (one of self.stages): its
        batch, peak learning rate, steps and rhythm."""
        index = self.stages.index(stage)
        first = self.stages[index - 1].end_step if index else 0
        learning_rate = self.optimisation.learning_rate * stage.batch_size / \
            self.optimisation.batch_size
        steps = dataclasses.replace(
            self.steps, first_step=first, total_steps=stage.end_step,
            steps_per_epoch=stage.steps_per_epoch,
            save_every=(self.steps.save_every_steps or (
                stage.end_step - first if stage.cached else stage.steps_per_epoch)),
            eval_every=(round(self.steps.eval_every_epochs * stage.steps_per_epoch)
                        if self.steps.eval_every else 0))
        return dataclasses.replace(
            self, stage=stage, steps=steps, optimisation=dataclasses.replace(
                self.optimisation, batch_size=stage.batch_size, epochs=stage.epochs,
                learning_rate=learning_rate))


# ---------------------------------------------------------------------------
# Defaults that depend on the data
# ---------------------------------------------------------------------------
def median_side(info):
    return max(info["image_size"]["height"]["median"], info["image_size"]["width"]["median"])


def default_image_size(info):
    """The data's median side as it is up to SMALL_IMAGE_SIDE (at least
    MIN_IMAGE_SIZE), where the small stem keeps every pixel; above, rounded
    up to a multiple of 32 (the ImageNet stem and the blocks halve it five
    times), at most 224."""
    side = median_side(info)
    if side <= SMALL_IMAGE_SIDE:
        return int(max(MIN_IMAGE_SIZE, math.ceil(side)))
    return int(min(224, math.ceil(side / 32) * 32))


def default_stem(image_size):
    return "small" if image_size <= SMALL_IMAGE_SIDE else "imagenet"


def default_flip_average(stem, augment):
    """Whether a new model's predictions average each image with its mirror
    image (train.py --flip_average unset): for small images (the small stem)
    trained with flips, where it gained on validation at every length of
    training measured, for a second pass of a network that costs little at
    their size (BENCHMARKS.md, "Flip average"); photos keep one pass."""
    return stem == "small" and augment != "none"


def default_epochs(num_train, model):
    images = DEFAULT_TRAINING_IMAGES.get(model, DEFAULT_TRAINING_IMAGES["layer_14"])
    epochs = images / max(1, num_train)
    return float(min(MAX_DEFAULT_EPOCHS, max(MIN_DEFAULT_EPOCHS, round(epochs))))


def class_weight_vector(class_weights, train_counts):
    """Each class's loss weight: 1, or with "balanced" the inverse of its
    frequency (scaled so that the mean over images is 1)."""
    counts = np.array(train_counts, dtype=np.float64)
    if class_weights == "none":
        return tuple(np.ones(len(counts), np.float32).tolist())
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return tuple(weights.astype(np.float32).tolist())


# ---------------------------------------------------------------------------
# Resolving the run's settings
# ---------------------------------------------------------------------------
def stored_manifest(model_dir):
    """The model.json of the run --model_dir holds checkpoints of (which this
    run resumes), or None for a new run."""
    return load_manifest(model_dir) if checkpoints.list_checkpoints(model_dir) else None


def resolve(args, info, plan, precision, decision, stored=None, has_gpu=False):
    """The RunConfig of train.py's parsed flags for the data of info (its
    dataset.json) on this plan (the replicas) and precision, starting as
    decision says (suite.training.start): from --model_dir's model.json
    (stored) when resuming, else from the flags and the data. Every
    contradiction is a UserError."""
    num_train = info["num_examples"]["train"]
    if num_train == 0:
        raise UserError(f"{args.data_dir} has no training images; re-run FlowIO.py")
    network = _network(args, info, stored, decision)
    global_batch = args.batch_size * plan.num_replicas
    optimisation = _optimisation(args, network, num_train, stored, global_batch,
                                 fine_tuning=not decision.from_scratch)
    stages, fine_tune = staging.resolve_stages(
        args, len(resnet.ResNet_demo[network.model]), num_train, plan.num_replicas, stored,
        decision.weights, plan.multi_worker, has_gpu, optimisation.epochs)
    steps = _steps(args, info, stages)
    augmentation = Augmentation(
        preset=(default_augmentation(median_side(info), network.image_size)
                if args.augment == "auto" else args.augment),
        mixup=args.mixup, cutmix=args.cutmix, random_erasing=args.random_erasing)
    return RunConfig(
        data_dir=args.data_dir, model_dir=args.model_dir, network=network,
        augmentation=augmentation, optimisation=optimisation, steps=steps,
        start=Start(args.init_checkpoint, args.exclude_scopes, args.trainable_scopes,
                    args.pretrained_cache, args.pretrained, decision.weights, decision.why,
                    fine_tune),
        precision=precision, plan=plan,
        class_weight_vector=class_weight_vector(
            args.class_weights, [info["counts"][name]["train"] for name in network.labels]),
        data={"dir": os.path.abspath(args.data_dir), "fingerprint": info["fingerprint"],
              "num_examples": info["num_examples"]},
        max_side=info["options"].get("max_side"), resuming=stored is not None, seed=args.seed,
        xla=args.xla, stages=stages, time_budget=args.time_budget,
        epochs_given=bool(args.epochs), compute=stored and stored.get("compute"))


def _network(args, info, stored, decision):
    """The Network: from the flags, the data and the start for a new model
    (TF-slim's resnet_v1 with published weights: shortcut B, the ImageNet
    stem, 224 px, slim's preprocessing); when resuming (stored: its
    manifest), the stored one, which the flags may not contradict. Only the
    flip average may change: it is not in the weights."""
    weights = decision.release
    if stored is None:
        image_size = args.image_size or (PRETRAINED_IMAGE_SIZE if weights
                                         else default_image_size(info))
        stem = "imagenet" if weights else args.stem or default_stem(image_size)
        normalization = (pretrained.NORMALIZATION if weights else
                         {"mean_rgb": MEAN_RGB, "std_rgb": STD_RGB})
        return Network(model=args.model or (PRETRAINED_MODEL if weights else
                                            DEFAULT_MODELS[stem]),
                       shortcut="B" if weights else args.shortcut or "A",
                       stem=stem, image_size=image_size, labels=tuple(info["classes"]),
                       pretrained=weights, mean_rgb=tuple(normalization["mean_rgb"]),
                       std_rgb=tuple(normalization["std_rgb"]),
                       flip_average=(default_flip_average(stem, args.augment)
                                     if args.flip_average is None else args.flip_average))
    if args.pretrained == "on":  # asked for on a model that may not have them
        weights = pretrained.release(args.model or stored["model"])
    # What the model was trained with (older manifests lack the newer keys).
    was = Network(model=stored["model"], shortcut=stored.get("shortcut", "A"),
                  stem=stored.get("stem", "imagenet"), image_size=stored["image_size"],
                  labels=tuple(stored["labels"]), pretrained=stored.get("pretrained"),
                  mean_rgb=tuple(stored["preprocessing"].get("mean_rgb", MEAN_RGB)),
                  std_rgb=tuple(stored["preprocessing"].get("std_rgb", STD_RGB)),
                  flip_average=stored.get("flip_average", False))
    now = dataclasses.replace(
        was, model=args.model or was.model, shortcut=args.shortcut or was.shortcut,
        stem=args.stem or was.stem, image_size=args.image_size or was.image_size,
        labels=tuple(info["classes"]), pretrained=weights or was.pretrained,
        flip_average=was.flip_average if args.flip_average is None else args.flip_average)
    _check_unchanged(args.model_dir, was, now)
    return now


def _check_unchanged(model_dir, was, now):
    """Resuming with a different class list, network or image size would fail
    deep inside TensorFlow ("Assign requires shapes of both tensors to
    match"): stop here instead and say what the user can do."""
    for key, flag in (("labels", "the class list"), ("model", "--model"),
                      ("shortcut", "--shortcut"), ("stem", "--stem"),
                      ("image_size", "--image_size"), ("pretrained", "--pretrained")):
        before, after = getattr(was, key), getattr(now, key)
        if before == after:
            continue
        if key == "labels":
            before = f"{len(before)} classes {list(before)}"
            after = f"{len(after)} classes {list(after)}"
        if key == "pretrained":
            before = before or "off (not started from TF-slim's weights)"
        raise UserError(
            f"{model_dir} holds a model trained with {flag} = {before}, but this run has "
            f"{after}. Either train into a new --model_dir, or start a new --model_dir "
            f"from those weights with --init_checkpoint (fine-tuning).")


def _optimisation(args, network, num_train, stored, global_batch, fine_tuning):
    """Optimisation from the flags; epochs by default the resumed run's own,
    else by the data's size (fine-tuning: the stages' own); the learning rate
    by default the linear scaling rule on the global batch."""
    previous = (stored or {}).get("training", {}).get("epochs")
    epochs = args.epochs or previous or (
        None if fine_tuning else default_epochs(num_train, network.model))
    learning_rate = (args.learning_rate
                     or BASE_LEARNING_RATE[network.stem] * global_batch / 256)
    names = [field.name for field in dataclasses.fields(Optimisation)]
    return Optimisation(**dict({name: getattr(args, name) for name in names},
                               epochs=epochs, learning_rate=learning_rate))


def _steps(args, info, stages):
    last = stages[-1]
    steps_per_epoch = last.steps_per_epoch
    eval_every = round(args.eval_every_epochs * steps_per_epoch)
    if not (info["num_examples"]["validation"] > 0 and eval_every > 0):
        eval_every = 0
    if args.early_stop_patience and not eval_every:
        raise UserError(f"--early_stop_patience counts validations, but this run has none "
                        f"({args.data_dir} has no validation split, or --eval_every_epochs is "
                        f"under one step): re-run FlowIO.py with --validation_ratio, or train "
                        f"without --early_stop_patience")
    return Steps(steps_per_epoch=steps_per_epoch, total_steps=last.end_step,
                 save_every=args.save_every_steps or steps_per_epoch,
                 save_every_secs=args.save_every_secs, eval_every=eval_every,
                 log_every=args.log_every_steps, keep_checkpoints=args.keep_checkpoints,
                 early_stop_patience=args.early_stop_patience,
                 eval_every_epochs=args.eval_every_epochs,
                 save_every_steps=args.save_every_steps)


def fixed_config(network, precision, batch_size, data_dir=None, xla=False):
    """The RunConfig of train.py's defaults for `network` (a Network) on one
    device, without a model directory, and without data unless data_dir: what
    the speed benchmarks time (bench/train_speed.py builds the training
    graph from it, so they measure the product's own step)."""
    steps = Steps(steps_per_epoch=1000, total_steps=1000, save_every=1000, save_every_secs=600,
                  eval_every=0, log_every=20, keep_checkpoints=5, early_stop_patience=0)
    return RunConfig(
        data_dir=data_dir, model_dir=None, network=network, augmentation=Augmentation(),
        optimisation=Optimisation(batch_size=batch_size, epochs=1.0, learning_rate=(
            BASE_LEARNING_RATE[network.stem] * batch_size / 256)),
        steps=steps, start=Start(), precision=precision, plan=distribute.Plan(["/cpu:0"]),
        class_weight_vector=(1.0,) * len(network.labels), data={}, xla=xla)
