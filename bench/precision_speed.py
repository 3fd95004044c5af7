"""Precisions against each other on this machine, taking turns in one process:
training steps of train.py's graph, or prediction batches as Evaluation.py
and useModel.py run them.

    python bench/precision_speed.py [--mode train|predict] [--model layer_14] [--stem imagenet|small]
                                    [--image_size 32] [--batch_size 32]
                                    [--precisions fp32,bf16] [--steps 20] [--rounds 6]

train: bench/train_speed.py's graph (build_ours: train.py's, built by the
product's suite.training.graph.build_training_graph with --stem, by default
the one train.py chooses for --image_size; synthetic input, momentum SGD, batch norm in
training mode, this CPU's weight-gradient limits) in each precision, each in
its own session. predict: the eval-mode network (the ImageNet stem) with
random weights saved as a checkpoint, as the scripts load it
(suite.model.network.frozen_network: weights folded in as constants), and, as
"PRECISION variables", the same network reading its weights from variables
(how the scripts ran before), to show what freezing does.

The contenders take turns (--steps steps each, --rounds rounds) so that a
shared machine's drift hits all of them; printed: each one's median
images/s and the median over rounds of its ratio to the first contender.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

from train_speed import REPO, build_ours  # bench/ is the script's folder, on sys.path


def training_contenders(args):
    import tensorflow as tf

    contenders = {}
    for precision in args.precisions.split(","):
        graph, train_op, config = build_ours(argparse.Namespace(
            data_dir=None, precision=precision, model=args.model,
            image_size=args.image_size, batch_size=args.batch_size, stem=args.stem,
            xla=False))
        session = tf.compat.v1.Session(graph=graph, config=config)
        with graph.as_default():
            session.run(tf.compat.v1.global_variables_initializer())
        contenders[precision] = (session, train_op, None)
    return contenders


def prediction_contenders(args, folder):
    import numpy as np
    import tensorflow as tf
    import resnet
    from suite.hardware.precision import choose_precision, session_config
    from suite.model.checkpoints import restore
    from suite.model.network import build_network, frozen_network, import_network

    manifest = {"model": args.model, "image_size": args.image_size, "shortcut": "A",
                "labels": [str(i) for i in range(10)]}
    checkpoint = os.path.join(folder, "model.ckpt-0")
    with tf.Graph().as_default():
        build_network(tf.zeros([1, args.image_size, args.image_size, 3]), manifest,
                      is_train=False)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, checkpoint)
    pixels = np.random.default_rng(0).normal(
        size=(args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    contenders = {}
    for name in args.precisions.split(","):
        precision = choose_precision(name)
        config = session_config(False, precision)
        for frozen in (True, False):
            graph = tf.Graph()
            with graph.as_default():
                # Fed at every run, as the scripts feed their batches (a constant
                # would let TensorFlow fold the whole frozen network away).
                images = tf.compat.v1.placeholder(tf.float32, pixels.shape)
                if frozen:
                    network, _ = frozen_network(manifest, folder, checkpoint,
                                                precision.graph_dtype)
                    logits = import_network(network, images)
                else:
                    logits = resnet.build(images, args.model, 10, is_train=False,
                                          compute_dtype=precision.graph_dtype)
                probabilities = tf.nn.softmax(logits)
                session = tf.compat.v1.Session(graph=graph, config=config)
                if not frozen:
                    restore(session, checkpoint)
            contenders[name + ("" if frozen else " variables")] = (session, probabilities,
                                                                   {images: pixels})
    return contenders


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("train", "predict"), default="train")
    parser.add_argument("--model", default="layer_14")
    parser.add_argument("--stem", choices=("imagenet", "small"), default=None,
                        help="training's stem (default: the one train.py chooses for "
                             "--image_size)")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="steps per contender and round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    from suite.plumbing import environment
    environment.configure()  # before TensorFlow loads
    from suite.hardware.precision import choose_precision

    with tempfile.TemporaryDirectory() as folder:
        contenders = (training_contenders(args) if args.mode == "train"
                      else prediction_contenders(args, folder))
        for session, fetch, feed in contenders.values():  # warm-up: oneDNN's primitives
            session.run(fetch, feed)
            session.run(fetch, feed)
        speed = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, (session, fetch, feed) in contenders.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    session.run(fetch, feed)
                speed[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    first = next(iter(contenders))
    auto = choose_precision(purpose="training" if args.mode == "train" else "prediction")
    print(f"{args.mode}, {args.model}, {args.image_size} px, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} steps taking turns; auto here: {auto}")
    for name in contenders:
        # Each round's own ratio: the machine's speed drifts between rounds.
        ratio = statistics.median(v / r for v, r in zip(speed[name], speed[first]))
        print(f"  {name:16s} {statistics.median(speed[name]):8.1f} images/s, {ratio:.2f}x "
              f"{first} (rounds: {', '.join(f'{v:.0f}' for v in speed[name])})")


if __name__ == "__main__":
    main()
