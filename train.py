"""Trains a ResNet on FlowIO's TFRecords and saves checkpoints into models/.

    python train.py [--data_dir data/tfrecords] [--model_dir models] [--model layer_14]
                    [--image_size N] [--batch_size 32] [--epochs 30] [--learning_rate 0.1]
                    [--precision auto|fp32|bf16|fp16]

The first line printed is the precision the run computes in and why
(hardware.choose_precision: with auto, bf16 on CPUs with AMX or avx512_bf16
and on GPUs of compute capability 8.0+, fp16 on 7.x, fp32 elsewhere).

    python train.py --pretrained --model layer_50|layer_101|layer_152 [--pretrained_cache DIR]

starts from TF-slim's ImageNet checkpoint (pretrained.py: downloaded once
into a cache folder), with shortcut B and the preprocessing it was trained
with (ImageNet's mean subtracted, not divided by a std); model.json says so.

Running it again continues from the newest complete checkpoint in --model_dir
(global step, optimizer state and schedule position). Ctrl-C or SIGTERM saves
a checkpoint and exits cleanly. --model_dir ends up self-describing:

    model.json        configuration, image size, preprocessing, data fingerprint,
                      TensorFlow version and the training options
    labels.txt        the label order ("index:name"), copied from the data
    model.ckpt-STEP.* the newest checkpoints (tf.compat.v1.train.Saver, relative paths),
                      with the moving averages of the weights (--moving_average_decay)
    best/             the checkpoint with the best validation accuracy so far
    validation.json   the latest validation (which weights were better), an early stop
    events.*          TensorBoard summaries: tensorboard --logdir models

so Evaluation.py and useModel.py need nothing but --model_dir.

Every GPU of the machine is used by default, one replica each; a cluster of
train.py processes trains together with --worker_hosts/--task_index or
TF_CONFIG (distribute.py). --batch_size is then per replica, the chief
(worker 0) writes --model_dir, and a lost worker stops every worker.
"""
import argparse
import contextlib
import math
import os
import re
import signal
import sys
import threading
import time

import numpy as np

import cli

if __name__ == "__main__":
    cli.configure_environment(verbose="--verbose" in sys.argv)  # before TensorFlow loads

import tensorflow as tf
import tf_slim as slim

import FlowIO
import cpu_gradients
import distribute
import hardware
import imagefile
import modeldir
import pretrained
import resnet
from cli import UserError

# The default network for each stem (default_stem): for small images, layer_14
# at half the depths trains 2.7x as many images per second, and the passes
# that buys took Fashion-MNIST's test top-1 from 92.4% to 93.0-93.2% in the
# same 30 minutes (BENCHMARKS.md, "Accuracy").
DEFAULT_MODELS = {"imagenet": "layer_14", "small": "layer_14_half"}
# --moving_average_decay's default; 0 keeps no average (BENCHMARKS.md, "Moving
# average of the weights": no better at the end of a cosine schedule).
DEFAULT_MOVING_AVERAGE_DECAY = 0.0
# Far above 4096 px a step fits in no memory; below 16 px there is nothing to learn.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
# Images up to this side train at their own size with the small stem
# (resnet.stem): the ImageNet stem would leave a 28-px image 7x7 before the
# first block (BENCHMARKS.md, "Accuracy").
SMALL_IMAGE_SIDE = 32
# The default length of training, in images shown per network: small sets
# need many passes, large ones learn as much from fewer; a cheaper network
# gets more in the same time (BENCHMARKS.md, "Accuracy": Fashion-MNIST's 55,000
# images take 25 epochs of layer_14_half, 29 minutes on 2 cores). Networks
# not listed get layer_14's.
DEFAULT_TRAINING_IMAGES = {"layer_14": 300_000, "layer_14_half": 1_400_000}
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 10, 30
# The default peak learning rate per 256 images of global batch, scaled
# linearly with the batch (Goyal et al., arXiv 1706.02677): ImageNet's 0.1
# for photos; for small images twice that, the ResNet paper's CIFAR-10
# recipe (0.1 at batch 128): at 0.1 Fashion-MNIST underfitted in a short
# run (BENCHMARKS.md, "Accuracy").
BASE_LEARNING_RATE = {"imagenet": 0.1, "small": 0.2}


# ---------------------------------------------------------------------------
# Options and their checks
# ---------------------------------------------------------------------------
def parse_args(argv=None):
    parser = cli.ArgumentParser(description="Train a ResNet on FlowIO's TFRecords.")
    group = parser.add_argument_group("data and model")
    group.add_argument("--data_dir", default="data/tfrecords",
                       help="FlowIO.py's output folder (default: %(default)s)")
    group.add_argument("--model_dir", default="models",
                       help="where checkpoints and model.json go (default: %(default)s)")
    group.add_argument("--model", default=None, choices=sorted(resnet.ResNet_demo),
                       help=f"network configuration (default: {DEFAULT_MODELS['small']} with the "
                            f"small stem, {DEFAULT_MODELS['imagenet']} with the ImageNet stem; or "
                            "the one in --model_dir when resuming)")
    group.add_argument("--shortcut", default=None, choices=resnet.SHORTCUTS,
                       help="shortcut option of the ResNet paper: A zero-pads (the seed's), "
                            "B projects where the depth changes (TF-slim's resnet_v1, for its "
                            "ImageNet checkpoints), C projects everywhere (default: A, or the "
                            "one in --model_dir when resuming)")
    group.add_argument("--image_size", type=cli.int_in_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
                       default=None,
                       help="square input side in pixels (default: the data's median side, "
                            f"as it is up to {SMALL_IMAGE_SIDE}, else rounded up to a multiple "
                            "of 32, at most 224; or the one in --model_dir when resuming)")
    group.add_argument("--stem", default=None, choices=resnet.STEMS,
                       help="the layers before the first block: imagenet (7x7/2 conv + 3x3/2 "
                            "max pool, the seed's) or small (one 3x3/1 conv, for small images) "
                            f"(default: small up to --image_size {SMALL_IMAGE_SIDE}, else "
                            "imagenet; or the one in --model_dir when resuming)")
    group = parser.add_argument_group("fine-tuning (as TF-slim's train_image_classifier.py)")
    group.add_argument("--init_checkpoint", default=None,
                       help="start a new --model_dir from these weights: a checkpoint prefix "
                            "or a model folder (its newest checkpoint)")
    group.add_argument("--exclude_scopes", default="resnet/logits",
                       help="comma-separated variable scopes NOT taken from --init_checkpoint "
                            "(default: %(default)s, so the class count may differ)")
    group.add_argument("--trainable_scopes", default=None,
                       help="comma-separated scopes to train; the rest stay frozen "
                            "(default: all)")
    group.add_argument("--pretrained", action="store_true",
                       help=f"start from TF-slim's ImageNet weights for --model "
                            f"{', '.join(pretrained.PUBLISHED)} (resnet_v1_N_"
                            f"{pretrained.RELEASE}, downloaded once into the cache): "
                            f"--init_checkpoint with them, --shortcut B and slim's "
                            f"preprocessing (the mean subtracted, no division)")
    group.add_argument("--pretrained_cache", metavar="DIR", default=None,
                       help=f"where --pretrained keeps the weights (default: "
                            f"${pretrained.CACHE_VARIABLE}, else {pretrained.cache_dir()})")
    group = parser.add_argument_group("augmentation")
    group.add_argument("--augment", default="auto", choices=("auto",) + tuple(FlowIO.AUGMENTATIONS),
                       help="the training crop and flip (FlowIO.AUGMENTATIONS): none, light "
                            "(56-100%% of the area, square), standard (25-100%%, aspect 3/4-4/3) "
                            "or strong (8-100%%). auto: light when the images are smaller than "
                            "twice --image_size, else standard (default: %(default)s)")
    group.add_argument("--mixup", type=cli.non_negative_float, default=0,
                       help="mixup's alpha (Zhang et al.; 0.2 is usual); 0 is off "
                            "(default: %(default)s)")
    group.add_argument("--cutmix", type=cli.non_negative_float, default=0,
                       help="CutMix's alpha (Yun et al.; 1.0 is usual); 0 is off. With "
                            "--mixup too, each batch takes one of them (default: %(default)s)")
    group.add_argument("--random_erasing", type=cli.probability, default=0, metavar="P",
                       help="the probability of replacing a random box (2-40%% of the image) "
                            "of each training image by noise (Zhong et al.; 0.5 is theirs); "
                            "0 is off (default: %(default)s)")
    group.add_argument("--flip_average", action=argparse.BooleanOptionalAction, default=None,
                       help="predict the mean of each image's and its mirror image's "
                            "probabilities (left-right flip): in validation, Evaluation.py, "
                            "useModel.py and every export, as model.json records it. Twice the "
                            "computation per prediction for 0.1-0.3 points of top-1 on "
                            "Fashion-MNIST (BENCHMARKS.md); only where a mirrored image is of the same class. "
                            "Resuming keeps the model's setting unless this flag is given "
                            "(default: off)")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--batch_size", type=cli.positive_int, default=64, help="(default: %(default)s)")
    images_seen = ", ".join(f"{n:,} images ({m})" for m, n in DEFAULT_TRAINING_IMAGES.items())
    group.add_argument("--epochs", type=cli.positive_float, default=None,
                       help="passes over the training split (default: "
                            f"{MAX_DEFAULT_EPOCHS} for small sets, fewer for larger ones so "
                            f"that about {images_seen} are seen, at least "
                            f"{MIN_DEFAULT_EPOCHS}; or the one in --model_dir when resuming)")
    group.add_argument("--learning_rate", type=cli.positive_float, default=None,
                       help="peak learning rate (default: 0.1 x global batch / 256, the linear "
                            "scaling rule of Goyal et al., arXiv 1706.02677, 0.025 at 64; "
                            "twice that with the small stem; the global batch is --batch_size "
                            "x replicas)")
    group.add_argument("--lr_schedule", choices=("cosine", "step"), default="cosine",
                       help="after warm-up: cosine decay to 0, or x0.1 at 50%%/75%% of "
                            "training (default: %(default)s)")
    group.add_argument("--warmup_epochs", type=cli.non_negative_float, default=2,
                       help="linear learning-rate warm-up (default: %(default)s)")
    group.add_argument("--momentum", type=cli.below_one, default=0.9, help="(default: %(default)s)")
    group.add_argument("--weight_decay", type=cli.non_negative_float, default=1e-4,
                       help="L2 on conv weights (default: %(default)s)")
    group.add_argument("--label_smoothing", type=cli.below_one, default=0.1, help="(default: %(default)s)")
    # "none" by measurement: on Fashion-MNIST with five classes at a tenth of
    # the others' frequency, "balanced" moved recall from the frequent classes
    # to the rare ones without raising macro-recall, and once collapsed for
    # two epochs at the default learning rate (BENCHMARKS.md, class weights).
    group.add_argument("--class_weights", choices=("none", "balanced"), default="none",
                       help="'balanced' weighs each class's loss by the inverse of its "
                            "frequency (default: %(default)s)")
    group.add_argument("--moving_average_decay", type=cli.below_one,
                       default=DEFAULT_MOVING_AVERAGE_DECAY,
                       help="keep an exponential moving average of the weights with this "
                            "decay, e.g. 0.999 (TF-slim's flag; it moves fast in the first "
                            "steps). Each validation measures both the raw and the averaged "
                            "weights and best/ keeps the better; 0 keeps none "
                            "(default: %(default)s)")
    group = parser.add_argument_group("speed")
    group.add_argument("--precision", choices=hardware.PRECISIONS, default="auto",
                       help="what the layers compute in: bf16 (bfloat16) or fp16 (float16, "
                            "with dynamic loss scaling); variables, batch-norm statistics, "
                            "the loss and the softmax stay fp32. auto (the default): bf16 on "
                            "CPUs with AMX or avx512_bf16 and on GPUs of compute capability "
                            "8.0+, fp16 on GPUs 7.x, fp32 elsewhere. The first line printed "
                            "says what was chosen and why")
    group.add_argument("--mixed_precision", action="store_true",
                       help="the same as --precision fp16 (the older name)")
    group.add_argument("--xla", action="store_true",
                       help="compile the graph with XLA (helps on GPUs)")
    group = parser.add_argument_group("checkpoints and logging")
    group.add_argument("--save_every_steps", type=cli.positive_int, default=None,
                       help="checkpoint interval in steps (default: once an epoch)")
    group.add_argument("--save_every_secs", type=cli.positive_float, default=600,
                       help="also checkpoint at least this often (default: %(default)s)")
    group.add_argument("--keep_checkpoints", type=cli.positive_int, default=5,
                       help="newest checkpoints kept, besides best/ (default: %(default)s)")
    group.add_argument("--eval_every_epochs", type=cli.non_negative_float, default=1,
                       help="validation accuracy interval; 0 turns it off (default: %(default)s)")
    group.add_argument("--early_stop_patience", type=cli.non_negative_int, default=0,
                       help="stop when this many validations in a row have not beaten the "
                            "best validation top-1 (a checkpoint is saved; the best is in "
                            "best/); 0 trains all --epochs (default: %(default)s)")
    group.add_argument("--log_every_steps", type=cli.positive_int, default=20,
                       help="progress line interval when not on a terminal (default: %(default)s)")
    group.add_argument("--seed", type=cli.non_negative_int, default=None,
                       help="seed for initialisation and data order (default: random)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic ops: with --seed, two runs give the same losses")
    distribute.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.mixed_precision:
        if args.precision not in ("auto", "fp16"):
            parser.error(f"--mixed_precision means --precision fp16, but --precision "
                         f"{args.precision} was given; give one of them")
        args.precision = "fp16"
    if args.deterministic and args.seed is None:
        args.seed = 0  # deterministic random ops need a seed
    if args.pretrained:
        _check_pretrained(parser, args)
    # The default --learning_rate follows the global batch, known once the
    # replicas are: _train() sets it.
    return args


def median_side(info):
    return max(info["image_size"]["height"]["median"], info["image_size"]["width"]["median"])


def _check_pretrained(parser, args):
    """--pretrained is TF-slim's resnet_v1_N network, which has shortcut B
    and the ImageNet stem, and its weights: it sets --shortcut B and --stem
    imagenet and is refused with what contradicts it (resolve_config fills
    in the rest)."""
    model = args.model or DEFAULT_MODELS["imagenet"]
    if model not in pretrained.PUBLISHED:
        parser.error(f"--pretrained: TF-slim publishes ImageNet weights for "
                     f"{', '.join(pretrained.PUBLISHED)} only, and --model is {model}"
                     f"{'' if args.model else ' (the default)'}: add --model layer_50")
    if args.shortcut not in (None, "B"):
        parser.error(f"--pretrained needs --shortcut B (TF-slim's resnet_v1 projects "
                     f"where the depth changes), not {args.shortcut}: leave --shortcut out")
    if args.stem not in (None, "imagenet"):
        parser.error(f"--pretrained needs --stem imagenet (TF-slim's resnet_v1 has it), "
                     f"not {args.stem}: leave --stem out")
    if args.init_checkpoint:
        parser.error("--pretrained and --init_checkpoint both say where the weights come "
                     "from: give one of them")
    args.shortcut, args.stem = "B", "imagenet"


def default_image_size(info):
    """The data's median side as it is up to SMALL_IMAGE_SIDE (at least
    MIN_IMAGE_SIZE), where the small stem keeps every pixel; above, rounded
    up to a multiple of 32 (the ImageNet stem and the blocks halve it five
    times), at most 224."""
    side = median_side(info)
    if side <= SMALL_IMAGE_SIDE:
        return int(max(MIN_IMAGE_SIZE, math.ceil(side)))
    return int(min(224, math.ceil(side / 32) * 32))


def default_epochs(num_train, model):
    images = DEFAULT_TRAINING_IMAGES.get(model, DEFAULT_TRAINING_IMAGES["layer_14"])
    epochs = images / max(1, num_train)
    return float(min(MAX_DEFAULT_EPOCHS, max(MIN_DEFAULT_EPOCHS, round(epochs))))


def default_stem(image_size):
    return "small" if image_size <= SMALL_IMAGE_SIDE else "imagenet"


def resolve_config(args, info, model_dir):
    """The run's configuration: from --model_dir when resuming, else from flags.

    Resuming with a different class list, network or image size would fail
    deep inside TensorFlow ("Assign requires shapes of both tensors to match");
    stop here instead and say what the user can do.

    "pretrained" names TF-slim's checkpoint the run starts from (or None),
    "preprocessing" how its pixels are normalised (FlowIO.normalize): slim's
    for its checkpoints, else ImageNet's mean and std. A resumed run keeps
    its manifest's: its checkpoints were trained with them.
    """
    weights = pretrained.release(args.model) if args.pretrained else None
    resuming = bool(modeldir.list_checkpoints(model_dir))
    if not resuming:
        image_size = args.image_size or default_image_size(info)
        stem = args.stem or default_stem(image_size)
        config = {"model": args.model or DEFAULT_MODELS[stem],
                  "shortcut": args.shortcut or "A",
                  "stem": stem,
                  "image_size": image_size,
                  "labels": info["classes"],
                  "pretrained": weights,
                  "preprocessing": dict(pretrained.NORMALIZATION if weights else
                                        {"mean_rgb": FlowIO.MEAN_RGB, "std_rgb": FlowIO.STD_RGB}),
                  "flip_average": False}
    else:
        manifest = modeldir.load_manifest(model_dir)
        # What the model was trained with (older manifests lack the newer keys).
        stored = dict(manifest, shortcut=manifest.get("shortcut", "A"),
                      stem=manifest.get("stem", "imagenet"), pretrained=manifest.get("pretrained"))
        config = {"model": args.model or stored["model"],
                  "shortcut": args.shortcut or stored["shortcut"],
                  "stem": args.stem or stored["stem"],
                  "image_size": args.image_size or stored["image_size"],
                  "labels": info["classes"],
                  "pretrained": weights or stored["pretrained"],
                  "preprocessing": stored["preprocessing"],
                  "flip_average": manifest.get("flip_average", False)}
        for key, flag in (("labels", "the class list"), ("model", "--model"),
                          ("shortcut", "--shortcut"), ("stem", "--stem"),
                          ("image_size", "--image_size"), ("pretrained", "--pretrained")):
            if config[key] != stored[key]:
                was, now = stored[key], config[key]
                if key == "labels":
                    was, now = f"{len(was)} classes {was}", f"{len(now)} classes {now}"
                if key == "pretrained":
                    was = was or "off (not started from TF-slim's weights)"
                raise UserError(
                    f"{model_dir} holds a model trained with {flag} = {was}, but this run has "
                    f"{now}. Either train into a new --model_dir, or start a new --model_dir "
                    f"from those weights with --init_checkpoint (fine-tuning).")
    # The augmentation and the flip average may change when resuming: they are
    # not part of the network's weights.
    config["augmentation"] = _augmentation(args, info, config["image_size"])
    if args.flip_average is not None:
        config["flip_average"] = args.flip_average
    return config, resuming


def _augmentation(args, info, image_size):
    if args.augment != "auto":
        return args.augment
    return FlowIO.default_augmentation(median_side(info), image_size)


def augmentation_record(config, args):
    """What model.json records under "augmentation": the per-image preset and
    the strengths of the batch and erasing augmentations (0: off)."""
    return {"preset": config["augmentation"], "mixup": args.mixup,
            "cutmix": args.cutmix, "random_erasing": args.random_erasing}


def describe_augmentation(record):
    """The training line's words for an augmentation_record()."""
    words = [f"{record['preset']} augmentation"]
    words += [f"{name.replace('_', ' ')} {strength:g}"
              for name, strength in record.items() if name != "preset" and strength]
    return " + ".join(words)


def write_manifest(model_dir, config, info, args, precision, plan=None):
    """model.json: what Evaluation.py and useModel.py rebuild the model from,
    and how it was trained (precision: the one this run computed in, and why;
    plan: the replicas and workers it ran on)."""
    manifest = {
        "model": config["model"],
        "num_classes": len(config["labels"]),
        "image_size": config["image_size"],
        "shortcut": config["shortcut"],
        "stem": config["stem"],
        "augmentation": augmentation_record(config, args),
        "pretrained": config["pretrained"],
        "flip_average": config["flip_average"],
        "preprocessing": dict(config["preprocessing"],
                              eval_crop=imagefile.eval_crop(config["image_size"]),
                              max_side=info["options"].get("max_side")),
        "data": {"dir": os.path.abspath(args.data_dir), "fingerprint": info["fingerprint"],
                 "num_examples": info["num_examples"]},
        "tensorflow": tf.__version__,
        "precision": precision._asdict(),
        "training": {k: v for k, v in vars(args).items() if k not in ("data_dir", "model_dir")},
    }
    if plan is not None:
        # --batch_size is per replica; the learning rate is for the global batch.
        manifest["training"].update(replicas=plan.num_replicas, workers=plan.num_workers,
                                    global_batch_size=args.batch_size * plan.num_replicas)
    modeldir.write_manifest(model_dir, manifest, config["labels"])


# ---------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------
def learning_rate_schedule(args, global_step, steps_per_epoch, total_steps):
    """Linear warm-up (Goyal et al., arXiv 1706.02677), then cosine decay to 0
    (Loshchilov & Hutter, arXiv 1608.03983) or x0.1 steps at 50% and 75%."""
    step = tf.cast(global_step, tf.float32)
    warmup = float(max(1, round(args.warmup_epochs * steps_per_epoch)))
    warmup = min(warmup, max(1.0, total_steps / 2))
    progress = tf.clip_by_value((step - warmup) / max(1.0, total_steps - warmup), 0.0, 1.0)
    if args.lr_schedule == "cosine":
        decayed = 0.5 * (1.0 + tf.cos(math.pi * progress))
    else:
        decayed = tf.where(progress < 0.5, 1.0, tf.where(progress < 0.75, 0.1, 0.01))
    ramp = tf.minimum(1.0, (step + 1.0) / warmup)
    return tf.multiply(args.learning_rate, ramp * decayed, name="learning_rate")


def class_weight_vector(args, info, labels):
    counts = np.array([info["counts"][name]["train"] for name in labels], dtype=np.float64)
    if args.class_weights == "none":
        return np.ones(len(labels), np.float32)
    return (counts.sum() / (len(labels) * np.maximum(counts, 1))).astype(np.float32)


def training_inputs(args, config, shard=None):
    """The training batches: FlowIO's pipeline with the run's augmentation
    preset (per image), then mixup/CutMix (per batch, when asked for);
    returns (images, targets [N, classes], labels: each image's main class)."""
    dataset = FlowIO.make_dataset(args.data_dir, "train", config["image_size"],
                                  args.batch_size, training=True, seed=args.seed,
                                  shard=shard, augmentation=config["augmentation"],
                                  preprocessing=config["preprocessing"],
                                  random_erasing=args.random_erasing)
    return dataset.map(lambda images, labels, _: _mixed(args, config, images, labels))


def _mixed(args, config, images, labels):
    targets = tf.one_hot(labels, len(config["labels"]))
    images, targets = FlowIO.mix_batch(images, targets, args.mixup, args.cutmix)
    return images, targets, tf.argmax(targets, 1, output_type=tf.int32)


def classification_loss(args, logits, targets, class_weights):
    """Softmax cross-entropy against the (possibly mixed) targets, label
    smoothing on top, each image weighted by its classes' weights."""
    weights = tf.reduce_sum(targets * class_weights, axis=1)
    return tf.compat.v1.losses.softmax_cross_entropy(
        targets, logits, weights=weights, label_smoothing=args.label_smoothing)


def build_training_graph(args, config, info, steps_per_epoch, total_steps, precision):
    """The training step in `precision` (a hardware.Precision): the layers in
    its graph_dtype, or float32 rewritten to bfloat16 by the session
    (hardware.session_config) for bf16 on a CPU."""
    # The input pipeline runs on the CPU, decoding and augmenting the next
    # batches (FlowIO prefetches) while the device runs the step; only the
    # finished batch is copied to a GPU.
    with tf.device("/cpu:0"):
        dataset = training_inputs(args, config)
        images, targets, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    global_step = tf.compat.v1.train.get_or_create_global_step()
    with cpu_gradients.faster_weight_gradients(precision):
        logits = modeldir.build_network(images, config, is_train=True,
                                        weight_decay=args.weight_decay,
                                        compute_dtype=precision.graph_dtype)
    cross_entropy = classification_loss(
        args, logits, targets, tf.constant(class_weight_vector(args, info, config["labels"])))
    # (Built in float16 or bfloat16, the L2 terms come in it: sum them in float32.)
    regularization = tf.add_n([tf.cast(loss, tf.float32) for loss in
                               tf.compat.v1.losses.get_regularization_losses()] or [0.0])
    total_loss = tf.add(cross_entropy, regularization, name="total_loss")
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                               labels), tf.float32))
    learning_rate = learning_rate_schedule(args, global_step, steps_per_epoch, total_steps)
    optimizer = tf.compat.v1.train.MomentumOptimizer(learning_rate, args.momentum)
    if precision.loss_scaling:
        # Dynamic loss scaling keeps small float16 gradients from flushing to
        # zero; steps whose gradients overflow are skipped.
        optimizer = tf.compat.v1.mixed_precision.MixedPrecisionLossScaleOptimizer(
            optimizer, "dynamic")
    # create_train_op also runs the batch-norm moving-average updates (UPDATE_OPS).
    # The loop checks the loss for NaN and Inf itself, to stop with the step number.
    # GATE_NONE lets each variable's update start as soon as its own gradient is
    # ready instead of after all gradients of its op: 12% more ResNet-50 images/s
    # on 2 cores (BENCHMARKS.md). Safe with resource variables, whose reads are
    # copied on write, so backprop never sees an updated weight.
    train_op = slim.learning.create_train_op(
        total_loss, optimizer, global_step=global_step,
        variables_to_train=_trainable_variables(args), check_numerics=False,
        gate_gradients=tf.compat.v1.train.Optimizer.GATE_NONE)
    return dict({"train_op": train_op, "loss": total_loss, "accuracy": accuracy,
                 "learning_rate": learning_rate, "global_step": global_step},
                **add_moving_average(args, train_op, global_step))


def add_moving_average(args, train_op, global_step):
    """TF-slim's --moving_average_decay: after each step, a shadow copy of every
    model variable (the weights and the batch-norm statistics) moves towards
    it, decay min(--moving_average_decay, (1 + step) / (10 + step)), so the
    first steps move fast. Returns the ops to add to the graph's: "train_op"
    (train_op, then the averages' update), "moving_average" (the
    tf.compat.v1.train.ExponentialMovingAverage) and "start_moving_averages"
    (sets each average to its variable); only {"moving_average": None}
    without the flag. Under a tf.distribute strategy, call it in its scope:
    the averages are mirrored like the weights and keep single-device names."""
    if not args.moving_average_decay:
        return {"moving_average": None}
    moving_average = tf.compat.v1.train.ExponentialMovingAverage(
        args.moving_average_decay, num_updates=global_step, name=modeldir.MOVING_AVERAGE_NAME)
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


def build_replicated_training_graph(args, config, info, steps_per_epoch, total_steps, strategy,
                                    precision):
    """build_training_graph's step on every replica of a tf.distribute strategy
    (distribute.py): each replica trains on its own --batch_size images, and
    the update applies the mean of the replicas' gradients to every copy of
    the variables, which keep their single-device names in checkpoints.

    Batch norm normalises each replica's batch with its own statistics, as
    TF-slim's clones do, so a step equals one device's on each slice with the
    gradients averaged. The moving statistics are the first replica's (see
    resnet.batch_norm).

    Graph collections are shared by all replicas, so nothing per replica
    comes from them: each replica runs its own batch-norm updates (those it
    added to UPDATE_OPS) and adds its own L2 term (the regularizer's losses
    exist only for the replica that created the variables).
    """
    replicas = strategy.num_replicas_in_sync
    class_weights = tf.constant(class_weight_vector(args, info, config["labels"]))

    def input_fn(context):
        # One pipeline per worker, on its CPU, reading its own share of the
        # shards; the strategy deals its per-replica batches to its replicas.
        return training_inputs(args, config, shard=(context.input_pipeline_id,
                                                    context.num_input_pipelines))

    with strategy.scope():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        iterator = strategy.make_input_fn_iterator(input_fn)
        learning_rate = learning_rate_schedule(args, global_step, steps_per_epoch, total_steps)
        optimizer = tf.compat.v1.train.MomentumOptimizer(learning_rate, args.momentum)
        if precision.loss_scaling:
            optimizer = tf.compat.v1.mixed_precision.MixedPrecisionLossScaleOptimizer(
                optimizer, "dynamic")
        # Any worker's Ctrl-C or SIGTERM stops every worker after the same step.
        stop_requested = tf.compat.v1.placeholder_with_default(0.0, [], name="stop_requested")
        replica_update_ops = []

        def replica_step(inputs):
            images, targets, labels = inputs
            updates = tf.compat.v1.get_collection_ref(tf.compat.v1.GraphKeys.UPDATE_OPS)
            first_update = len(updates)
            first_regularizer = len(tf.compat.v1.losses.get_regularization_losses())
            with cpu_gradients.faster_weight_gradients(precision):
                logits = modeldir.build_network(images, config, is_train=True,
                                                weight_decay=args.weight_decay,
                                                compute_dtype=precision.graph_dtype)
            update_ops = updates[first_update:]
            replica_update_ops.append(update_ops)
            cross_entropy = classification_loss(args, logits, targets, class_weights)
            regularization, terms = _replica_regularization(args.weight_decay)
            created = tf.compat.v1.losses.get_regularization_losses()[first_regularizer:]
            if created and len(created) != terms:  # the replica that made the variables
                raise RuntimeError(f"the network regularizes {len(created)} variables, "
                                   f"_replica_regularization {terms}")
            total_loss = tf.add(cross_entropy, regularization, name="total_loss")
            accuracy = tf.reduce_mean(tf.cast(tf.equal(
                tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32))
            # The replicas' gradients are summed: each replica's loss carries
            # 1/replicas of the weight, so the sum is the mean gradient.
            scaled_loss = slim.learning.create_train_op(
                total_loss / replicas, optimizer, global_step=global_step,
                update_ops=update_ops, variables_to_train=_trainable_variables(args),
                check_numerics=False, gate_gradients=tf.compat.v1.train.Optimizer.GATE_NONE)
            return tf.stack([scaled_loss * replicas, accuracy, stop_requested])

        per_replica = strategy.experimental_run(replica_step, iterator)
        # One all-reduce for what the loop prints and checks: the mean loss
        # and accuracy, and whether any worker asked to stop.
        metrics = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
        averaging = add_moving_average(args, metrics, global_step)

        def step_moments():  # every replica's global step, to check they agree
            step = tf.cast(global_step, tf.float64)
            return tf.stack([step, step * step, 1.0])
        step_check = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.extended
                                     .call_for_each_replica(step_moments), axis=None)
    ids = [{op.name for op in ops} for ops in replica_update_ops]
    if len({len(i) for i in ids}) != 1 or len(set().union(*ids)) != sum(map(len, ids)):
        raise RuntimeError("the replicas' batch-norm updates overlap: the replicas were "
                           "built interleaved")
    return {"train_op": metrics, "loss": metrics[0], "accuracy": metrics[1],
            "learning_rate": learning_rate, "global_step": global_step,
            "initializers": iterator.initialize(), "stop_requested": stop_requested,
            "step_check": step_check, "images_per_step": args.batch_size * replicas,
            **averaging}


def _replica_regularization(weight_decay):
    """The L2 term resnet_arg_scope's regularizer adds (weight_decay x
    l2_loss of every conv's weights), from the weights as this replica reads
    them, so each replica's gradients include it; and how many terms it has."""
    # (In a replica other than the first, a mirrored variable's op is its own
    # copy's, "…/weights/replica_1"; its name stays the variable's.)
    weights = [v for v in tf.compat.v1.trainable_variables()
               if v.name.rsplit(":", 1)[0].endswith("/weights")]
    if not weight_decay or not weights:
        return tf.constant(0.0), 0
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(tf.cast(w, tf.float32))
                                               for w in weights]), name="regularization"), \
        len(weights)


def _scopes(text):
    return [scope.strip().rstrip("/") + "/" for scope in (text or "").split(",") if scope.strip()]


def _trainable_variables(args):
    scopes = _scopes(args.trainable_scopes)
    variables = tf.compat.v1.trainable_variables()
    if not scopes:
        return variables
    chosen = [v for v in variables if any(v.op.name.startswith(s) for s in scopes)]
    if not chosen:
        raise UserError(f"--trainable_scopes {args.trainable_scopes} matches no variable; "
                               f"scopes look like resnet/block4,resnet/logits")
    return chosen


def warm_start(session, path, exclude_scopes):
    """Loads the variables of checkpoint `path` that exist there with the same
    shape, except exclude_scopes; reports what it left at initialisation.

    A TF-slim resnet_v1_50/101/152 checkpoint (e.g. the published ImageNet
    ones) names our "resnet/..." variables "resnet_v1_50/..."; with
    --shortcut B every other part of the name and shape is the same.
    """
    if os.path.isdir(path):
        found = modeldir.list_checkpoints(path)
        if not found:
            raise UserError(f"--init_checkpoint {path} holds no checkpoint")
        path = found[0]
    try:
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"--init_checkpoint {path} cannot be read "
                               f"({getattr(error, 'message', error)})")
    slim_roots = {name.split("/")[0] for name in shapes if re.match(r"resnet_v1_\d+/", name)}
    root = slim_roots.pop() if len(slim_roots) == 1 else "resnet"
    excluded = _scopes(exclude_scopes)
    restore, skipped, left_out = {}, [], []
    candidates = {v.op.name: v for v in
                  tf.compat.v1.model_variables() + tf.compat.v1.trainable_variables()}
    for name, variable in sorted(candidates.items()):
        if any(name.startswith(s) for s in excluded):
            left_out.append(name)
            continue
        stored_name = root + name[len("resnet"):] if name.startswith("resnet/") else name
        if shapes.get(stored_name) == variable.shape.as_list():
            restore[stored_name] = variable
        else:
            skipped.append(name)
    if not restore:
        raise UserError(f"--init_checkpoint {path} has none of this network's variables")
    tf.compat.v1.train.Saver(restore).restore(session, path)
    print(f"initialised {len(restore)} variables from {path}; left at their initial values: "
          f"{len(left_out)} excluded by --exclude_scopes, {len(skipped)} not in it or of "
          f"another shape{' (e.g. ' + ', '.join(skipped[:3]) + ')' if skipped else ''}")


def build_validation_graph(args, config, expected_count, moving_average=None):
    """The eval-mode network over the validation split, sharing the weights;
    with moving_average (add_moving_average's), a second one on the same
    images that reads the moving averages instead (a custom getter hands it
    each variable's shadow variable)."""
    with tf.device("/cpu:0"):  # as in training: input on the CPU
        dataset = FlowIO.make_dataset(args.data_dir, "validation", config["image_size"],
                                      args.batch_size, training=False,
                                      preprocessing=config["preprocessing"])
        iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        images, labels, _ = iterator.get_next()

    def correct(custom_getter=None):
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True,
                                         custom_getter=custom_getter):
            logits = modeldir.build_network(images, config, is_train=False)
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                              labels), tf.int32))

    def read_average(getter, name, *args, **kwargs):
        variable = getter(name, *args, **kwargs)
        average = moving_average.average(variable)
        return variable if average is None else average

    correct_by_weights = {modeldir.RAW: correct()}
    if moving_average is not None:
        correct_by_weights[modeldir.MOVING_AVERAGE] = correct(read_average)
    return {"init": iterator.initializer, "correct": correct_by_weights,
            "count": tf.size(labels), "expected_count": expected_count}


def validation_accuracy(session, ops, data_dir):
    """Top-1 over the whole validation split, by weights: {modeldir.RAW: top-1,
    modeldir.MOVING_AVERAGE: top-1 (with --moving_average_decay)}. Its records
    are counted, so a shard that holds fewer (or more) than dataset.json
    lists is an error, not an accuracy over the wrong images."""
    session.run(ops["init"])
    correct = dict.fromkeys(ops["correct"], 0)
    count = 0
    while True:
        try:
            batch_correct, n = session.run([ops["correct"], ops["count"]])
        except tf.errors.OutOfRangeError:
            break
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise FlowIO.explain_data_error(data_dir, "validation", error)
        correct = {weights: correct[weights] + c for weights, c in batch_correct.items()}
        count += n
    if count != ops["expected_count"]:
        raise UserError(f"{data_dir} holds {count} validation records but its "
                        f"{FlowIO.DATASET_FILE} lists {ops['expected_count']}: re-run FlowIO.py to "
                        f"rebuild {data_dir}")
    return {weights: c / max(count, 1) for weights, c in correct.items()}


def better_weights(top1):
    """The weights that validated better (validation_accuracy's dict); the raw
    ones on a tie, as there is then no reason to prefer the averages."""
    return max(top1, key=lambda weights: (top1[weights], weights == modeldir.RAW))


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


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
class StopRequest:
    """Turns Ctrl-C and SIGTERM into a flag the loop checks between steps, so a
    checkpoint is saved instead of the process dying mid-step."""

    def __init__(self):
        self.signal_name = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name}: saving a checkpoint, then stopping "
              f"(press Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)


def _summary(writer, step, values):
    _summaries_written(lambda: writer.add_summary(tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=tag, simple_value=float(value))
        for tag, value in values.items()]), step), writer.get_logdir())


def _quiet_summary_thread():
    """TensorBoard's writer thread dies with a traceback when a write fails (a
    full disk); the writer raises the same error again in the main thread on
    its next call, where _summaries_written reports it as one line. The
    thread's own traceback would only bury that line."""
    default_hook = threading.excepthook

    def hook(args):
        if args.thread is None or args.thread.name != "EventLoggerThread":
            default_hook(args)
    threading.excepthook = hook


def _summaries_written(write, model_dir):
    """Runs write(); TensorBoard's writer thread reports a failed write (a
    full disk) as a RuntimeError on the next call: one line instead."""
    try:
        write()
    except (RuntimeError, OSError) as error:
        raise UserError(f"cannot write TensorBoard summaries in {model_dir} "
                        f"({cli.reason(error)}): free some space, then run train.py again "
                        f"to resume from the last checkpoint")


def _format_duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(args):
    plan = distribute.plan(args)
    if not plan.is_chief:  # the chief alone writes into --model_dir
        return _train(args, plan)
    with modeldir.writer_lock(args.model_dir):
        return _train(args, plan)


def _check_memory(config, batch_size):
    """Refuses an image or batch size whose first step cannot fit in memory,
    before the run starts rather than after the machine starts swapping."""
    blocks = sum(stage["num_blocks"] for stage in resnet.ResNet_demo[config["model"]])
    # The small stem keeps the full size where the ImageNet stem shrinks it 4x:
    # its activations are those of an image 4x the side.
    side = config["image_size"] * (4 if config.get("stem") == "small" else 1)
    needed = hardware.training_memory_bytes(blocks, side, batch_size)
    available = hardware.physical_memory_bytes()
    if needed > 0.9 * available:
        raise UserError(f"{config['model']} at --image_size {config['image_size']} with "
                        f"--batch_size {batch_size} needs about {needed / 1e9:.0f} GB for one "
                        f"training step; this machine has {available / 1e9:.0f} GB: lower "
                        f"--image_size or --batch_size")


def _training_precision(args, plan):
    """hardware.choose_precision, except that a cluster of CPU workers stays in
    fp32: oneDNN's bfloat16 rewrite reaches the workers' collective all-reduce,
    which has no bfloat16 kernel on a CPU (the first step fails)."""
    precision = hardware.choose_precision(args.precision)
    if not (plan.multi_worker and precision.rewrite_bf16):
        return precision
    if args.precision == "bf16":
        raise UserError("--precision bf16 does not run on a cluster of CPU workers (its "
                        "all-reduce has no bfloat16 kernel there): use --precision fp32")
    return hardware.Precision("fp32", "CPU", "a cluster of CPU workers: oneDNN's bfloat16 "
                              "rewrite does not cover their collective all-reduce")


def _train(args, plan):
    precision = _training_precision(args, plan)
    print(precision, flush=True)  # the first line: what this run computes in, and why
    info = FlowIO.load_dataset_info(args.data_dir)
    config, resuming = resolve_config(args, info, args.model_dir)
    num_train = info["num_examples"]["train"]
    if num_train == 0:
        raise UserError(f"{args.data_dir} has no training images; re-run FlowIO.py")
    if args.epochs is None:  # resuming: the run's own length; else by the data's size
        previous = (modeldir.load_manifest(args.model_dir).get("training", {}).get("epochs")
                    if resuming else None)
        args.epochs = previous or default_epochs(num_train, config["model"])
    global_batch = args.batch_size * plan.num_replicas
    if args.learning_rate is None:
        args.learning_rate = BASE_LEARNING_RATE[config["stem"]] * global_batch / 256
    steps_per_epoch = max(1, num_train // global_batch)
    total_steps = max(1, round(args.epochs * steps_per_epoch))
    save_every = args.save_every_steps or steps_per_epoch
    eval_every = round(args.eval_every_epochs * steps_per_epoch)
    has_validation = info["num_examples"]["validation"] > 0 and eval_every > 0
    if args.early_stop_patience and not has_validation:
        raise UserError(f"--early_stop_patience counts validations, but this run has none "
                        f"({args.data_dir} has no validation split, or --eval_every_epochs is "
                        f"under one step): re-run FlowIO.py with --validation_ratio, or train "
                        f"without --early_stop_patience")

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    if device == "CPU":  # this process's replicas share its memory
        _check_memory(config, args.batch_size * len(plan.local_devices))
    print(f"training {config['model']} ({config['stem']} stem) at {config['image_size']}px "
          f"with {describe_augmentation(augmentation_record(config, args))} on {device}: "
          f"{num_train} images in {len(config['labels'])} classes, "
          f"{steps_per_epoch} steps/epoch, {total_steps} steps")
    if args.pretrained and not resuming:
        # --init_checkpoint with TF-slim's weights, from the cache (downloaded
        # the first time). A resumed run continues from its own checkpoints
        # and fetches nothing. Every worker of a cluster reads them itself.
        args.init_checkpoint = pretrained.fetch(config["model"], args.pretrained_cache)
    if plan.replicated:
        print(f"data-parallel: {plan.describe()}; global batch {global_batch} "
              f"({args.batch_size} per replica), learning rate {args.learning_rate:.4g}",
              flush=True)
        if not plan.is_chief:
            return _train_replica(args, plan, config, info, steps_per_epoch, total_steps,
                                  precision)
    for index, name in enumerate(config["labels"]):
        print(f"  {index:3d} {name}: {info['counts'][name]['train']} train, "
              f"{info['counts'][name]['validation']} validation")
    write_manifest(args.model_dir, config, info, args, precision, plan)

    graph = tf.Graph()
    with graph.as_default():
        if args.seed is not None:
            tf.compat.v1.set_random_seed(args.seed)
        strategy = distribute.make_strategy(plan)
        if strategy is None:
            ops = build_training_graph(args, config, info, steps_per_epoch, total_steps,
                                       precision)
        else:
            ops = build_replicated_training_graph(args, config, info, steps_per_epoch,
                                                  total_steps, strategy, precision)
        validation = (build_validation_graph(args, config, info["num_examples"]["validation"],
                                             ops["moving_average"])
                      if has_validation else None)
        saver = tf.compat.v1.train.Saver(max_to_keep=args.keep_checkpoints,
                                         save_relative_paths=True)
        best_savers = _best_savers(ops)
        if not plan.multi_worker:
            ops.pop("stop_requested", None)  # one process: a stop needs no agreement
        with _session(args, plan, strategy, precision) as session:
            restored, step = _initialize(args, plan, session, ops)
            if restored:
                print(f"resuming from {restored} (step {step})")
                saver.recover_last_checkpoints(modeldir.list_checkpoints(args.model_dir)[::-1])
            if step >= total_steps:
                print(f"already trained to step {step} of {total_steps}; raise --epochs "
                      f"to train further")
                _wait_for_everyone(plan, session, ops)
                return 0
            stopped = modeldir.load_validation(args.model_dir).get("stopped_early")
            if stopped and not continues_after_early_stop(stopped, args.early_stop_patience,
                                                          total_steps):
                print(f"stopped early at step {stopped['step']}: no better validation top-1 "
                      f"in the {stopped['patience']} validations after step "
                      f"{stopped['best_step']} (the best, in "
                      f"{os.path.join(args.model_dir, modeldir.BEST_DIR)}). To train further, "
                      f"raise --early_stop_patience above {stopped['patience']} or --epochs "
                      f"above {stopped['epochs']:g}")
                _wait_for_everyone(plan, session, ops)
                return 0
            if stopped:  # patience counts afresh from the stop
                print(f"continuing after the early stop at step {stopped['step']}")
                modeldir.save_validation(args.model_dir, {
                    k: v for k, v in modeldir.load_validation(args.model_dir).items()
                    if k != "stopped_early"})
            _quiet_summary_thread()
            writer = tf.compat.v1.summary.FileWriter(args.model_dir, graph)
            try:
                result = _loop(args, session, ops, validation, saver, best_savers, writer,
                               step, steps_per_epoch, total_steps, save_every, eval_every,
                               patience_from=stopped["step"] if stopped else 0)
            except BaseException:
                # The error that stopped training is the one to report, not a
                # failing flush of the summaries behind it (on a full disk).
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            _summaries_written(writer.close, args.model_dir)
            _wait_for_everyone(plan, session, ops)
            return result


def _wait_for_everyone(plan, session, ops):
    """A cluster's last collective. A worker that has finished its last step
    may not leave yet: another may still be fetching its share of that step.
    Once this completes here, every worker has entered it, so all are done
    with the steps; the others waited in it while the chief validated and
    saved. Its own end may be cut short by a worker that completed it and
    left first: harmless, as nothing follows."""
    if plan.multi_worker:
        with contextlib.suppress(tf.errors.OpError):
            session.run(ops["step_check"])


@contextlib.contextmanager
def _session(args, plan, strategy, precision):
    """The training session: on this process's devices; in a cluster on this
    task's tf.distribute.Server, once every peer answers, each run watched
    for lost peers, and a lost peer's error said in one line naming it."""
    config = distribute.session_config(plan, strategy,
                                       hardware.session_config(args.xla, precision))
    if not plan.multi_worker:
        with tf.compat.v1.Session(config=config) as session:
            yield session
        return
    server = distribute.start_server(plan, config)
    watch = distribute.PeerWatch(plan)
    try:
        with tf.compat.v1.Session(server.target, config=config) as session:
            yield distribute.WatchedSession(session, watch)
    except tf.errors.OpError as error:
        lost = distribute.lost_peer_error(plan, error)
        if lost is None:
            raise
        raise lost from None
    finally:
        watch.stop()


def _initialize(args, plan, session, ops):
    """Initialises the variables, then restores the newest checkpoint of
    --model_dir (or warm-starts from --init_checkpoint); returns the
    checkpoint restored (or None) and the step.

    In a cluster every worker does this: the initial values are broadcast
    from the chief, but a checkpoint is read by each worker from --model_dir,
    which they must share; the steps they restored are compared.
    """
    session.run(tf.compat.v1.global_variables_initializer())
    session.run(ops.get("initializers", []))
    averages = _moving_averages(ops)
    weights = [v for v in tf.compat.v1.global_variables()
               if not modeldir.is_average(v.op.name)]
    restored = modeldir.restore_newest(session, tf.compat.v1.train.Saver(weights),
                                       args.model_dir)
    if not restored and args.init_checkpoint:
        warm_start(session, args.init_checkpoint, args.exclude_scopes)
    if averages:
        _start_moving_averages(session, ops, averages, restored)
    step = int(session.run(ops["global_step"]))
    if plan.multi_worker:
        total, squares, count = session.run(ops["step_check"])
        if squares * count != total * total:
            raise UserError(f"the workers start from different steps (this one from {step}, "
                            f"their mean is {total / count:g}): --model_dir must be a folder "
                            f"every worker shares, and so must --init_checkpoint")
    return restored, step


def _moving_averages(ops):
    """The shadow variables of add_moving_average, one per model variable ([] without)."""
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


def _best_savers(ops):
    """The Savers of best/, by the weights that validated better: RAW saves the
    variables as they are; MOVING_AVERAGE (with --moving_average_decay) saves
    each one's moving average under the variable's own name. Either way best/
    holds plain variables, so its readers need nothing special."""
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    weights = {name: v for name, v in variables.items() if not modeldir.is_average(name)}
    savers = {modeldir.RAW: tf.compat.v1.train.Saver(weights, max_to_keep=1,
                                                     save_relative_paths=True)}
    if ops.get("moving_average") is not None:
        savers[modeldir.MOVING_AVERAGE] = tf.compat.v1.train.Saver(
            {name: variables.get(modeldir.average_name(name), v) for name, v in weights.items()},
            max_to_keep=1, save_relative_paths=True)
    return savers


def _train_replica(args, plan, config, info, steps_per_epoch, total_steps, precision):
    """A worker other than the chief: the same graph and the same steps as
    the chief (every step is collective), writing nothing; the chief saves
    the checkpoints, validates and reports progress."""
    graph = tf.Graph()
    with graph.as_default():
        if args.seed is not None:
            tf.compat.v1.set_random_seed(args.seed)
        strategy = distribute.make_strategy(plan)
        ops = build_replicated_training_graph(args, config, info, steps_per_epoch,
                                              total_steps, strategy, precision)
        with _session(args, plan, strategy, precision) as session:
            restored, step = _initialize(args, plan, session, ops)  # the chief's checkpoint
            if restored:
                print(f"resuming from {restored} (step {step})")
            if step >= total_steps:
                print(f"already trained to step {step} of {total_steps}")
                _wait_for_everyone(plan, session, ops)
                return 0
            # The chief decides the same from the same file (--model_dir is shared).
            stopped = modeldir.load_validation(args.model_dir).get("stopped_early")
            if stopped and not continues_after_early_stop(stopped, args.early_stop_patience,
                                                          total_steps):
                print(f"stopped early at step {stopped['step']}; the chief says how to go on")
                _wait_for_everyone(plan, session, ops)
                return 0
            stop = StopRequest()
            fetches = [ops["train_op"], ops["global_step"]]
            result = 0
            while step < total_steps:
                metrics, _ = session.run(fetches, {ops["stop_requested"]:
                                                   float(stop.signal_name is not None)})
                step += 1
                if not np.isfinite(metrics[0]):  # the mean over all replicas: all stop
                    print(f"error: the loss became {metrics[0]} at step {step}; the chief "
                          f"says what to do", file=sys.stderr)
                    result = 1
                    break
                if metrics[2] > 0:  # a stop, agreed by all workers after this step
                    break
            _wait_for_everyone(plan, session, ops)
            if result == 0:
                print(f"{plan.task_name()}: {'stopped' if step < total_steps else 'finished'} "
                      f"at step {step}; the chief saved the checkpoint")
            return result


def _loop(args, session, ops, validation, saver, best_savers, writer, step,
          steps_per_epoch, total_steps, save_every, eval_every, patience_from=0):
    """The training steps, with checkpoints, validations and best/; returns
    the exit code. Early stopping counts validations without improvement
    from the best one, or from patience_from (where an earlier early stop
    ended, when this run continues it) if that is later."""
    stop = StopRequest()
    early_stop = None  # its record, once early stopping decides to stop
    tty = sys.stdout.isatty()
    best = modeldir.load_best(args.model_dir)
    fetches = [ops["train_op"], ops["loss"], ops["accuracy"], ops["learning_rate"],
               ops["global_step"]]
    window_start, window_steps, window_acc = time.time(), 0, 0.0
    run_start, run_start_step = time.time(), step
    last_save_time = time.time()
    loss = float("nan")
    # In a cluster, a stop request (any worker's) ends every worker after the
    # same step: it travels with the step's metrics.
    agreeing = "stop_requested" in ops
    agreed = not agreeing
    while step < total_steps and not ((stop.signal_name or early_stop) and agreed):
        feed = ({ops["stop_requested"]: float(bool(stop.signal_name or early_stop))}
                if agreeing else None)
        try:
            metrics, loss, accuracy, lr, _ = session.run(fetches, feed)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise FlowIO.explain_data_error(args.data_dir, "train", error)
        except tf.errors.ResourceExhaustedError:
            raise UserError(f"out of memory in a training step at --image_size "
                            f"{args.image_size or 'from the data'} and --batch_size "
                            f"{args.batch_size}: lower either and run train.py again")
        step += 1
        if agreeing and metrics[2] > 0:
            agreed = True
            if not (stop.signal_name or early_stop):
                stop.signal_name = "another worker's stop request"
        if not np.isfinite(loss):
            # Stop before saving: the newest checkpoint on disk stays finite.
            print(f"\nerror: the loss became {loss} at step {step}. Lower --learning_rate "
                  f"(now {args.learning_rate}) or check the data; training resumes from "
                  f"the last finite checkpoint.", file=sys.stderr)
            return 1
        window_steps += 1
        window_acc += accuracy
        epoch = step / steps_per_epoch
        if tty or step % args.log_every_steps == 0 or step == total_steps:
            now = time.time()
            rate = (window_steps * ops.get("images_per_step", args.batch_size)
                    / max(now - window_start, 1e-9))
            overall = (step - run_start_step) / max(now - run_start, 1e-9)
            eta = _format_duration((total_steps - step) / max(overall, 1e-9))
            line = (f"step {step}/{total_steps} epoch {epoch:.2f} loss {loss:.4f} "
                    f"acc {window_acc / window_steps:.3f} lr {lr:.4g} "
                    f"{rate:.1f} img/s ETA {eta}")
            print(("\r" + line + "  ") if tty else line, end="" if tty else "\n", flush=True)
            _summary(writer, step, {"loss": loss, "accuracy": window_acc / window_steps,
                                    "learning_rate": lr, "images_per_second": rate})
            window_start, window_steps, window_acc = now, 0, 0.0
        if step % save_every == 0 or time.time() - last_save_time > args.save_every_secs:
            modeldir.save_checkpoint(session, saver, args.model_dir, step)
            last_save_time = time.time()
        if validation is not None and (step % eval_every == 0 or step == total_steps):
            top1 = validation_accuracy(session, validation, args.data_dir)
            weights = better_weights(top1)
            _summary(writer, step, {f"validation_top1{tag}": top1[name] for name, tag in
                                    ((modeldir.RAW, ""),
                                     (modeldir.MOVING_AVERAGE, "_moving_average"))
                                    if name in top1})
            marker = ""
            if top1[weights] > best["validation_top1"]:
                best = modeldir.save_best(session, best_savers[weights], args.model_dir, step,
                                          top1[weights], weights)
                marker = (" (best so far, saved to best/)" if weights == modeldir.RAW else
                          " (best so far: the moving average, saved to best/)")
            # What readers of the regular checkpoints go by (modeldir.reads_moving_averages).
            record = {"step": step, "top1": top1[modeldir.RAW], "weights": weights}
            line = f"validation top-1 at step {step}: {top1[modeldir.RAW]:.4f}"
            if modeldir.MOVING_AVERAGE in top1:
                record["moving_average_top1"] = top1[modeldir.MOVING_AVERAGE]
                line += f" raw, {top1[modeldir.MOVING_AVERAGE]:.4f} moving average"
            modeldir.save_validation(args.model_dir, record)
            print(("\n" if tty else "") + line + marker, flush=True)
            if step < total_steps and early_stop_due(step, max(best["step"] or 0, patience_from),
                                                     eval_every, args.early_stop_patience):
                early_stop = {"best_step": best["step"], "patience": args.early_stop_patience,
                              "epochs": args.epochs, "total_steps": total_steps}
    if tty:
        print()
    path = modeldir.save_checkpoint(session, saver, args.model_dir, step)
    best_dir = os.path.join(args.model_dir, modeldir.BEST_DIR)
    if stop.signal_name:
        print(f"stopped by {stop.signal_name} at step {step}; saved {path}. "
              f"Run train.py again to continue.")
    elif early_stop:
        # Recorded, so that running the same command again does not train on.
        modeldir.save_validation(args.model_dir, dict(modeldir.load_validation(args.model_dir),
                                                      stopped_early=dict(early_stop, step=step)))
        print(f"stopped early at step {step}: validation top-1 has not beaten "
              f"{best['validation_top1']:.4f} (step {best['step']}, in {best_dir}) in "
              f"{args.early_stop_patience} validations; saved {path}. To train further, raise "
              f"--early_stop_patience or --epochs")
    else:
        print(f"finished: step {step}, loss {loss:.4f}; saved {path}")
        if best["step"] is not None:
            weights = (", the moving averages of the weights"
                       if best.get("weights") == modeldir.MOVING_AVERAGE else "")
            print(f"best validation top-1 {best['validation_top1']:.4f} at step {best['step']} "
                  f"(in {best_dir}{weights})")
    return 0


def main():
    args = parse_args()
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    sys.exit(train(args))


if __name__ == "__main__":
    cli.run_main(main)
