"""Trains a ResNet on FlowIO.py's TFRecords and saves checkpoints into models/.

    python train.py [--data_dir data/tfrecords] [--model_dir models] [--model layer_14]
                    [--image_size N] [--batch_size 64] [--epochs N] [--learning_rate R]
                    [--pretrained auto|on|off] [--fine_tune auto|head|last_stage|all]
                    [--time_budget MINUTES] [--precision auto|fp32|bf16|fp16]

The first line printed says where the weights start and why
(suite.training.start), the second the precision the run computes in
(suite.hardware.precision). Defaults follow the data: photos start from
TF-slim's ImageNet resnet_v1_50 (downloaded once into a cache) and train the
new classifier on the frozen network's cached features (suite.training.stages);
without those weights, and for small images (up to 32 px), the network trains
from random weights (layer_14 with the ImageNet stem for photos,
layer_14_half with the small stem at their own size for small images). The
run's settings are resolved once (suite.training.config) and recorded in
model.json. --time_budget fits the run into the minutes given
(suite.training.time_budget).

Running it again continues from the newest complete checkpoint in --model_dir;
Ctrl-C or SIGTERM saves a checkpoint and exits cleanly. --model_dir ends up
self-describing (model.json, labels.txt, checkpoints, best/, validation.json,
TensorBoard events), so Evaluation.py and useModel.py need nothing but it.
Every GPU of the machine is used by default, one replica each; a cluster of
train.py processes trains together with --worker_hosts/--task_index or
TF_CONFIG (suite.training.distribute).
"""
import argparse
import os
import sys
import time

STARTED = time.time()  # --time_budget counts from here, TensorFlow's import included

from suite.plumbing import environment  # noqa: E402

if __name__ == "__main__":
    environment.configure(verbose="--verbose" in sys.argv)  # before TensorFlow loads

import tensorflow as tf

from resnet import SHORTCUTS, STEMS, ResNet_demo
from suite.plumbing import flags
from suite.plumbing.errors import run_main
from suite.preprocessing.augment import AUGMENTATIONS
from suite.training import distribute, pretrained, stages, start
from suite.training.config import (DEFAULT_MODELS, DEFAULT_TRAINING_IMAGES, MAX_DEFAULT_EPOCHS,
                                   MAX_IMAGE_SIZE, MIN_DEFAULT_EPOCHS, MIN_IMAGE_SIZE,
                                   PRETRAINED_MODEL, SMALL_IMAGE_SIDE, Optimisation, Start)
from suite.training.run import train


def parse_args(argv=None):
    parser = flags.ArgumentParser(description="Train a ResNet on FlowIO's TFRecords.")
    group = parser.add_argument_group("data and model")
    group.add_argument("--data_dir", default=flags.DEFAULT_DATA_DIR,
                       help="FlowIO.py's output folder (default: %(default)s)")
    flags.add_model_dir(group, "where checkpoints and model.json go")
    group.add_argument("--model", default=None, choices=sorted(ResNet_demo),
                       help=f"network configuration (default: {DEFAULT_MODELS['small']} with the "
                            f"small stem, {DEFAULT_MODELS['imagenet']} with the ImageNet stem; or "
                            "the one in --model_dir when resuming)")
    group.add_argument("--shortcut", default=None, choices=SHORTCUTS,
                       help="shortcut option of the ResNet paper (He et al., arXiv "
                            "1512.03385): A zero-pads the input to the new depth, no extra "
                            "weights; B projects with a 1x1 conv where the depth changes "
                            "(TF-slim's resnet_v1, whose ImageNet checkpoints load); C projects "
                            "everywhere (default: A, or the one in --model_dir when resuming)")
    group.add_argument("--image_size", type=flags.int_in_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
                       default=None,
                       help="square input side in pixels (default: the data's median side, "
                            f"as it is up to {SMALL_IMAGE_SIDE}, else rounded up to a multiple "
                            "of 32, at most 224; or the one in --model_dir when resuming)")
    group.add_argument("--stem", default=None, choices=STEMS,
                       help="the layers before the first block: imagenet (7x7/2 conv + 3x3/2 "
                            "max pool, a 4x smaller map, for photos) or small (one 3x3/1 conv, "
                            "for images of a few dozen pixels) "
                            f"(default: small up to --image_size {SMALL_IMAGE_SIDE}, else "
                            "imagenet; or the one in --model_dir when resuming)")
    group = parser.add_argument_group("fine-tuning (as TF-slim's train_image_classifier.py)")
    group.add_argument("--init_checkpoint", default=None,
                       help="start a new --model_dir from these weights: a checkpoint prefix "
                            "or a model folder (its newest checkpoint)")
    group.add_argument("--exclude_scopes", default=Start.exclude_scopes,
                       help="comma-separated variable scopes NOT taken from --init_checkpoint "
                            "(default: %(default)s, so the class count may differ)")
    group.add_argument("--trainable_scopes", default=None,
                       help="comma-separated scopes to train; the rest stay frozen "
                            "(default: all)")
    group.add_argument("--pretrained", nargs="?", const="on", default="auto",
                       choices=start.CHOICES,
                       help=f"start from TF-slim's ImageNet weights (resnet_v1_N_"
                            f"{pretrained.RELEASE} for --model "
                            f"{', '.join(pretrained.PUBLISHED)}, downloaded once into the "
                            f"cache; --shortcut B, the ImageNet stem, --image_size 224 unless "
                            f"given, slim's preprocessing). auto: for photo-sized images "
                            f"(above {SMALL_IMAGE_SIDE} px) when they can be had, else random "
                            f"weights, saying why; on (or the bare flag): required; off: "
                            f"never (default: %(default)s)")
    group.add_argument("--fine_tune", default="auto", choices=stages.CHOICES,
                       help="from trained weights: head trains only the new classifier, on "
                            "the frozen network's features computed once (a few augmented "
                            "views of each image, cached in --model_dir); last_stage then "
                            "trains block 4 too, all the whole network (the pretrained layers "
                            f"at {stages.PRETRAINED_LR_RATIO:g}x the learning rate). auto: "
                            "head on a CPU; head, then all on a GPU or when --time_budget "
                            "leaves room for it (default: %(default)s)")
    group.add_argument("--pretrained_cache", metavar="DIR", default=None,
                       help=f"where --pretrained keeps the weights (default: "
                            f"${pretrained.CACHE_VARIABLE}, else {pretrained.cache_dir()})")
    group = parser.add_argument_group("augmentation")
    group.add_argument("--augment", default="auto", choices=("auto",) + tuple(AUGMENTATIONS),
                       help="the training crop and flip: none, light "
                            "(56-100%% of the area, square), standard (25-100%%, aspect 3/4-4/3) "
                            "or strong (8-100%%). auto: light when the images are smaller than "
                            "twice --image_size, else standard (default: %(default)s)")
    group.add_argument("--mixup", type=flags.non_negative_float, default=0,
                       help="mixup's alpha (Zhang et al.; 0.2 is usual); 0 is off "
                            "(default: %(default)s)")
    group.add_argument("--cutmix", type=flags.non_negative_float, default=0,
                       help="CutMix's alpha (Yun et al.; 1.0 is usual); 0 is off. With "
                            "--mixup too, each batch takes one of them (default: %(default)s)")
    group.add_argument("--random_erasing", type=flags.probability, default=0, metavar="P",
                       help="the probability of replacing a random box (2-40%% of the image) "
                            "of each training image by noise (Zhong et al.; 0.5 is theirs); "
                            "0 is off (default: %(default)s)")
    group.add_argument("--flip_average", action=argparse.BooleanOptionalAction, default=None,
                       help="predict the mean of each image's and its mirror image's "
                            "probabilities (left-right flip): in validation, Evaluation.py, "
                            "useModel.py and every export, as model.json records it. Twice the "
                            "computation per prediction for 0.1-0.3 points of top-1 on "
                            "Fashion-MNIST (BENCHMARKS.md, \"Flip average\"); only where a "
                            "mirrored image is of the same class. "
                            "Resuming keeps the model's setting unless this flag is given "
                            "(default: on for small images, the small stem, unless --augment "
                            "none; off for photos)")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--time_budget", type=flags.positive_float, default=None,
                       metavar="MINUTES",
                       help="fit the run into this many minutes: the speed of its first "
                            "steps sets the number of steps (--epochs is then the most) "
                            "and the stages, and the learning rate's schedule ends with the "
                            "budget (default: none)")
    group.add_argument("--batch_size", type=flags.positive_int, default=Optimisation.batch_size,
                       help="images per step on each replica (default: %(default)s)")
    images_seen = ", ".join(f"{n:,} images ({m})" for m, n in DEFAULT_TRAINING_IMAGES.items())
    group.add_argument("--epochs", type=flags.epochs, default=None,
                       help="passes over the training split (default: "
                            f"{MAX_DEFAULT_EPOCHS} for small sets, fewer for larger ones so "
                            f"that about {images_seen} are seen, at least "
                            f"{MIN_DEFAULT_EPOCHS}; when fine-tuning, those of the last stage: "
                            f"{stages.HEAD_EPOCHS} for the head, through the network "
                            f"{stages.MIN_FINE_TUNE_EPOCHS}-{stages.MAX_FINE_TUNE_EPOCHS} so "
                            f"that about {stages.FINE_TUNE_IMAGES:,} images are seen; or the "
                            f"one in --model_dir when resuming)")
    group.add_argument("--learning_rate", type=flags.positive_float, default=None,
                       help="peak learning rate (default: 0.1 x global batch / 256, the linear "
                            "scaling rule of Goyal et al., arXiv 1706.02677, 0.025 at 64; "
                            "twice that with the small stem; the global batch is --batch_size "
                            "x replicas)")
    group.add_argument("--lr_schedule", choices=("cosine", "step"),
                       default=Optimisation.lr_schedule,
                       help="after warm-up: cosine decay to 0, or x0.1 at 50%%/75%% of "
                            "training (default: %(default)s)")
    group.add_argument("--warmup_epochs", type=flags.epochs_or_zero,
                       default=Optimisation.warmup_epochs,
                       help="linear learning-rate warm-up (default: %(default)s)")
    group.add_argument("--momentum", type=flags.below_one, default=Optimisation.momentum,
                       help="of the SGD updates (default: %(default)s)")
    group.add_argument("--weight_decay", type=flags.non_negative_float,
                       default=Optimisation.weight_decay,
                       help="L2 on conv weights (default: %(default)s)")
    group.add_argument("--label_smoothing", type=flags.below_one,
                       default=Optimisation.label_smoothing,
                       help="the share of each target spread over all classes (Szegedy et al., "
                            "arXiv 1512.00567) (default: %(default)s)")
    group.add_argument("--class_weights", choices=("none", "balanced"),
                       default=Optimisation.class_weights,
                       help="'balanced' weighs each class's loss by the inverse of its "
                            "frequency (default: %(default)s)")
    group.add_argument("--moving_average_decay", type=flags.below_one,
                       default=Optimisation.moving_average_decay,
                       help="keep an exponential moving average of the weights with this "
                            "decay, e.g. 0.999 (TF-slim's flag; it moves fast in the first "
                            "steps). Each validation measures both the raw and the averaged "
                            "weights and best/ keeps the better; 0 keeps none "
                            "(default: %(default)s)")
    group = parser.add_argument_group("speed")
    flags.add_precision(group, "training")
    group.add_argument("--mixed_precision", action="store_true",
                       help="the same as --precision fp16 (the older name)")
    group.add_argument("--xla", action="store_true",
                       help="compile the graph with XLA (helps on GPUs)")
    group = parser.add_argument_group("checkpoints and logging")
    group.add_argument("--save_every_steps", type=flags.positive_int, default=None,
                       help="checkpoint interval in steps (default: once an epoch)")
    group.add_argument("--save_every_secs", type=flags.positive_float, default=600,
                       help="also checkpoint at least this often (default: %(default)s)")
    group.add_argument("--keep_checkpoints", type=flags.positive_int, default=5,
                       help="newest checkpoints kept, besides best/ (default: %(default)s)")
    group.add_argument("--eval_every_epochs", type=flags.epochs_or_zero, default=1,
                       help="validation accuracy interval; 0 turns it off (default: %(default)s)")
    group.add_argument("--early_stop_patience", type=flags.non_negative_int, default=0,
                       help="stop when this many validations in a row have not beaten the "
                            "best validation top-1 (a checkpoint is saved; the best is in "
                            "best/); 0 trains all --epochs (default: %(default)s)")
    group.add_argument("--log_every_steps", type=flags.positive_int, default=20,
                       help="progress line interval when not on a terminal (default: %(default)s)")
    group.add_argument("--seed", type=flags.non_negative_int, default=None,
                       help="seed for initialisation and data order (default: random)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic ops: with --seed, two runs give the same losses")
    group = parser.add_argument_group(
        "several devices or machines (data-parallel; --batch_size is per replica)")
    group.add_argument("--num_gpus", type=flags.positive_int, default=None,
                       help="GPUs to train on, one replica each (default: all that "
                            "TensorFlow sees; CUDA_VISIBLE_DEVICES chooses which)")
    group.add_argument("--num_cpu_replicas", type=flags.positive_int, default=None,
                       help="replicas on this many logical CPU devices of a machine "
                            "without GPUs: not faster, it runs the multi-device program "
                            "(for tests)")
    group.add_argument("--worker_hosts", default=None,
                       help="comma-separated host:port of every worker of a cluster, the "
                            "same on each (or set TF_CONFIG instead); worker 0 is the chief, "
                            "which writes checkpoints, validation and progress")
    group.add_argument("--task_index", type=flags.non_negative_int, default=None,
                       help="this worker's position in --worker_hosts")
    group.add_argument("--startup_timeout", type=flags.positive_float,
                       default=distribute.DEFAULT_STARTUP_TIMEOUT,
                       help="seconds to wait for the other workers to start "
                            "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.mixed_precision:
        if args.precision not in ("auto", "fp16"):
            parser.error(f"--mixed_precision means --precision fp16, but --precision "
                         f"{args.precision} was given; give one of them")
        args.precision = "fp16"
    if args.deterministic and args.seed is None:
        args.seed = 0  # deterministic random ops need a seed
    if args.pretrained == "on":
        _check_pretrained(parser, args)
    if args.time_budget and (args.worker_hosts or os.environ.get("TF_CONFIG")):
        parser.error("--time_budget plans one machine's run: leave it out on a cluster")
    # The default --learning_rate follows the global batch, known once the
    # replicas are: suite.training.config resolves it.
    return args


def _check_pretrained(parser, args):
    """--pretrained is TF-slim's resnet_v1_N network, which has shortcut B
    and the ImageNet stem, and its weights: it sets --shortcut B and --stem
    imagenet and is refused with what contradicts it (suite.training.config
    fills in the rest)."""
    model = args.model or PRETRAINED_MODEL
    if model not in pretrained.PUBLISHED:
        parser.error(f"--pretrained: TF-slim publishes ImageNet weights for "
                     f"{', '.join(pretrained.PUBLISHED)} only, and --model is {model}"
                     f": add --model {PRETRAINED_MODEL}")
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


def main():
    args = parse_args()
    args.started = STARTED
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    sys.exit(train(args))


if __name__ == "__main__":
    run_main(main)
