"""Fine-tuning in stages (train.py --fine_tune), and the run's plan of stages.

A run that starts from trained weights (--pretrained, --init_checkpoint)
first trains only the new classifier, the "head", on the frozen network's
features: they are computed once for the training images (a few augmented
views of each) and cached beside the run (suite.training.features), so an
epoch of the head costs milliseconds instead of a ResNet-50 forward and
backward pass per image, as Model Maker and Teachable Machine do it on a
CPU. Then, where the time is worth it, a stage through the network trains
the last stage ("last_stage": block 4 and the head, the layers before it
frozen, their batch norm included) or everything ("all"), the pretrained
layers at a tenth of the head's learning rate; starting it from a trained
head keeps its first steps from wrecking the pretrained features (LP-FT,
Kumar et al., arXiv 2202.10054).

auto is the head alone on a CPU, and the head then all on a GPU or when
--time_budget leaves room for the stage through the network
(suite.training.time_budget). A run from random weights is one stage, "all".
"""
import dataclasses
import math

from suite.plumbing.errors import UserError

CHOICES = ("auto", "head", "last_stage", "all")
HEAD = "head"
# Passes over the cached features (every view of every image): the head is
# a linear classifier on 2,048 features and converges in a few dozen passes.
HEAD_EPOCHS = 20
# A larger batch for the head: its steps are tiny, so fewer of them cost less
# Python per epoch (the learning rate follows it, the linear rule).
HEAD_BATCH_SIZE = 256
# The pretrained layers learn at this share of the head's rate in the stage
# through the network (discriminative rates, as fastai's fine_tune).
PRETRAINED_LR_RATIO = 0.1
# Augmented views of each training image whose features the head trains on:
# enough for about FEATURE_ROWS rows (small sets gain most from more views),
# between 1 and MAX_VIEWS, so that the features are computed in minutes.
FEATURE_ROWS, MAX_VIEWS = 10_000, 5
# The stage through the network, by default: enough epochs to see about
# FINE_TUNE_IMAGES images, between 10 and 50. Pretrained features need few
# passes to adapt, but a set of a few dozen images is one step an epoch: at
# 20 images per class 10 epochs gained nothing over the head, 50 did
# (BENCHMARKS.md, "Transfer").
FINE_TUNE_IMAGES = 20_000
MIN_FINE_TUNE_EPOCHS, MAX_FINE_TUNE_EPOCHS = 10, 50


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a run: what it trains and for how many steps.

    name: "head" (the classifier on cached features), "last_stage" or "all";
    end_step: the global step it trains to; epochs and steps_per_epoch: its
    own; batch_size: per step; frozen_stages: the network's stages held in
    inference mode (resnet.inference); trainable_scopes: the variables it
    trains (None: all); pretrained_lr_ratio: the learning rate of the
    layers that came trained, as a share of the stage's; optional: auto
    plans it, and the time budget may leave it out; views: see views_for."""
    name: str
    end_step: int
    epochs: float
    steps_per_epoch: int
    batch_size: int
    frozen_stages: int = 0
    trainable_scopes: str = None
    pretrained_lr_ratio: float = 1.0
    optional: bool = False
    views: int = 1  # the head's: augmented views of each training image

    @property
    def cached(self):
        return self.name == HEAD


def resolve_stages(args, num_stages_of_model, num_train, replicas, stored, weights,
                   multi_worker, has_gpu, epochs):
    """The run's Stages and --fine_tune as resolved, for train.py's flags
    (args) on `replicas`: a resumed run's own (stored: its model.json), its last stage's
    epochs changed by --epochs, or a stage through the network added after
    its head by --fine_tune last_stage|all; else planned afresh (weights:
    where the run starts, None for random weights)."""
    records = (stored or {}).get("training", {}).get("stages")
    if records:
        stages, fine_tune = from_record(records), stored["training"].get("fine_tune")
        if args.fine_tune not in ("auto", fine_tune) and stages[-1].name != args.fine_tune:
            stages, fine_tune = _added(stages, args.fine_tune, num_train, args.batch_size,
                                       replicas, args.epochs, num_stages_of_model), args.fine_tune
        elif args.epochs and args.epochs != stages[-1].epochs:
            stages = with_last_epochs(stages, args.epochs)
        return stages, fine_tune
    names = chosen_stages(args.fine_tune, weights, multi_worker, has_gpu, args.time_budget,
                          args.trainable_scopes)
    views = views_for(num_train) if names[0] == HEAD else 1
    stages = plan(names, num_train, args.batch_size, views, epochs, args.fine_tune,
                  num_stages_of_model, replicas)
    return stages, None if weights is None else args.fine_tune


def _added(stages, name, num_train, batch_size, replicas, epochs, num_stages_of_model):
    """A resumed head-only run's stages with the stage `name` after them."""
    if len(stages) != 1 or stages[0].name != HEAD or name == HEAD:
        raise UserError(f"this model was trained in the stages "
                        f"{', '.join(stage.name for stage in stages)}: --fine_tune {name} can "
                        f"only follow a head alone; train into a new --model_dir with "
                        f"--init_checkpoint to fine-tune it further")
    head, added = plan((HEAD, name), num_train, batch_size, stages[0].views, epochs, name,
                       num_stages_of_model, replicas)
    shift = stages[0].end_step - head.end_step
    return stages + (dataclasses.replace(added, end_step=added.end_step + shift),)


def chosen_stages(requested, weights, multi_worker, has_gpu, time_budget, trainable_scopes):
    """The names of the stages --fine_tune `requested` means for this run:
    weights is where it starts (None: random weights)."""
    if weights is None:
        if requested not in ("auto", "all"):
            raise UserError(f"--fine_tune {requested} needs trained weights to start from "
                            f"(--pretrained or --init_checkpoint), and this run starts from "
                            f"random weights: leave --fine_tune out")
        return ("all",)
    if trainable_scopes:  # the user chose the variables: one stage, as TF-slim's script
        if requested not in ("auto", "all"):
            raise UserError(f"--trainable_scopes and --fine_tune {requested} both say what to "
                            f"train: give one of them")
        return ("all",)
    if multi_worker:  # the head's cached features are one machine's work
        if requested in ("head", "last_stage"):
            raise UserError(f"--fine_tune {requested} trains on one machine: train it there, "
                            f"then start the cluster from it with --init_checkpoint and "
                            f"--fine_tune all")
        return ("all",)
    if requested == "auto":
        return (HEAD, "all") if (has_gpu or time_budget) else (HEAD,)
    return (HEAD,) if requested == HEAD else (HEAD, requested)


def plan(names, num_train, batch_size, views, epochs, requested, num_stages_of_model,
         replicas=1):
    """The Stages of names, one after the other from step 0 (batch_size: per
    replica; the head trains on one device, its own batch): the head's
    epochs are HEAD_EPOCHS unless it is the only stage and --epochs says;
    a stage through the network takes --epochs (fine_tune_epochs after a
    head stage). An auto-chosen stage through the network on a CPU is
    optional (the time budget decides)."""
    stages, step = [], 0
    for name in names:
        last = name == names[-1]
        if name == HEAD:
            stage_epochs = epochs if (last and epochs) else HEAD_EPOCHS
            size = min(HEAD_BATCH_SIZE, num_train * views)
            per_epoch = max(1, math.ceil(num_train * views / size))
        else:
            stage_epochs = (epochs or fine_tune_epochs(num_train)) if names[0] == HEAD \
                else epochs
            size = batch_size
            per_epoch = max(1, num_train // (batch_size * replicas))
        step += max(1, round(stage_epochs * per_epoch))
        stages.append(Stage(
            name=name, end_step=step, epochs=stage_epochs, steps_per_epoch=per_epoch,
            batch_size=size,
            # After the head, every batch norm keeps its statistics (as Keras's
            # fine-tuning guide does): a few dozen steps cannot move them to
            # the new data, and eval-mode statistics that lag the batches'
            # undid the head at 20 images per class (BENCHMARKS.md, "Transfer").
            frozen_stages=num_stages_of_model if name != HEAD and names[0] == HEAD else 0,
            trainable_scopes=_scopes(name, num_stages_of_model),
            pretrained_lr_ratio=PRETRAINED_LR_RATIO if names[0] == HEAD and name != HEAD
            else 1.0,
            optional=requested == "auto" and name != HEAD and names[0] == HEAD,
            views=views if name == HEAD else 1))
    return tuple(stages)


def fine_tune_epochs(num_train):
    """The default epochs of a stage through the network after the head."""
    return float(min(MAX_FINE_TUNE_EPOCHS,
                     max(MIN_FINE_TUNE_EPOCHS, round(FINE_TUNE_IMAGES / max(1, num_train)))))


def views_for(num_train):
    """How many augmented views of each training image the head trains on."""
    return int(min(MAX_VIEWS, max(1, round(FEATURE_ROWS / max(1, num_train)))))


def with_last_epochs(stages, epochs):
    """stages with the last one trained for `epochs` (a resumed run's --epochs)."""
    last = stages[-1]
    first = stages[-2].end_step if len(stages) > 1 else 0
    return stages[:-1] + (dataclasses.replace(
        last, epochs=epochs, end_step=first + max(1, round(epochs * last.steps_per_epoch))),)


def _scopes(name, num_stages_of_model):
    if name == HEAD:
        return "resnet/logits"
    if name == "last_stage":
        return f"resnet/block{num_stages_of_model},resnet/postnorm,resnet/logits"
    return None


def moved_end(stages, index, end_step):
    """stages with stages[index] ending at end_step (the time budget's plan)
    and the stages after it moved by as many steps."""
    shift = end_step - stages[index].end_step
    moved = [dataclasses.replace(stage, end_step=stage.end_step + shift)
             for stage in stages[index:]]
    first = stages[index - 1].end_step if index else 0
    moved[0] = dataclasses.replace(
        moved[0], epochs=round((end_step - first) / moved[0].steps_per_epoch, 3))
    return stages[:index] + tuple(moved)


def describe(stages, first=0):
    """The stages in words, for train.py's plan line (first: the step the
    first of them begins at)."""
    parts = []
    for stage in stages:
        what = {HEAD: f"the classifier on the network's cached features ({stage.views} "
                      f"view{'s' if stage.views > 1 else ''} of each image)",
                "last_stage": "the last stage and the classifier, the rest frozen",
                "all": "every layer"}[stage.name]
        if stage.name != HEAD and stage.pretrained_lr_ratio != 1.0:
            what += f" (the pretrained ones at {stage.pretrained_lr_ratio:g}x the rate)"
        parts.append(f"{what}: {stage.epochs:g} epoch{'' if stage.epochs == 1 else 's'}, "
                     f"{stage.end_step - first} steps of {stage.batch_size}")
        first = stage.end_step
    return "; then ".join(parts)


def record(stages):
    """model.json's record of the stages."""
    return [dataclasses.asdict(stage) for stage in stages]


def from_record(records):
    return tuple(Stage(**stage) for stage in records)
