"""The convs' weight gradients on a CPU: TensorFlow's kernel against cpu_gradients' two other ways
of computing them (suite.training.cpu_gradients), shape by shape, then a whole training step.

    python bench/weight_gradients.py [--model layer_50] [--image_size 224]
                                     [--batch_size 32] [--repeats 5] [--step_rounds 4]
                                     [--precision fp32|bf16] [--limits 0,0 7,14 ...]

1. For every distinct conv shape of the network (stride 1: the strided ones
   always take TensorFlow's kernel), the median time of its weight gradient
   three ways: TensorFlow's Conv2DBackpropFilter (oneDNN), a matrix product
   (1x1 convs), and a forward conv with the batch and channel axes swapped
   (3x3 convs), with GFLOP/s, how often the shape occurs, and which one
   suite.training.cpu_gradients picks on this CPU (choose_limits). In bf16
   the three run on bfloat16 tensors: the kernels oneDNN's rewrite of a
   training graph runs.
2. Training graphs of the same network (train.py's, built by the product's
   suite.training.graph.build_training_graph through bench/train_speed.py's
   build_ours, synthetic input, in --precision), one per --limits (matrix
   products for 1x1 convs up to the first number, swapped convs for 3x3
   convs up to the second; 0,0: TensorFlow's kernels; default: 0,0 and this
   CPU's choice), taking turns for --step_rounds rounds in one process:
   images/s of each and the ratio to the first.
Both parts use --stem, by default the one train.py chooses for --image_size
(suite.training.config.default_stem: the small stem up to 32 px).
"""
import argparse
import collections
import statistics
import sys
import time

from train_speed import REPO, build_ours  # bench/ is the script's folder, on sys.path


def median_seconds(session, fetch, repeats):
    session.run(fetch)  # warm-up: oneDNN builds its primitive on the first run
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(fetch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_shapes(resnet, tf, args):
    """{(input shape, kernel shape, padding): count} of the stride-1 convs of
    the network build_ours trains (--stem, or the one train.py chooses)."""
    from suite.training.config import default_stem

    shapes = collections.Counter()
    with tf.Graph().as_default() as graph:
        images = tf.zeros([args.batch_size, args.image_size, args.image_size, 3])
        resnet.build(images, args.model, 10, is_train=False,
                     stem_kind=args.stem or default_stem(args.image_size))
        for op in graph.get_operations():
            if op.type == "Conv2D" and list(op.get_attr("strides")) == [1, 1, 1, 1]:
                shapes[(tuple(op.inputs[0].shape.as_list()), tuple(op.inputs[1].shape.as_list()),
                        op.get_attr("padding").decode())] += 1
    return shapes


def compare_shapes(resnet, tf, np, args):
    from suite.hardware.precision import DTYPES, cpu_flags
    from suite.training import cpu_gradients

    limits = cpu_gradients.choose_limits(cpu_flags(), args.precision)
    dtype = DTYPES[args.precision]
    print(f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}: "
          f"weight gradient of each stride-1 conv shape, median of {args.repeats} runs "
          f"(ms, GFLOP/s); this CPU's limits: {limits}")
    print(f"{'count':>5}  {'input':>18} {'kernel':>16}  {'tensorflow':>12} {'matmul':>12} "
          f"{'swapped conv':>12}  cpu_gradients picks")
    totals = collections.Counter()
    for (input_shape, kernel, padding), count in sorted(
            conv_shapes(resnet, tf, args).items(), key=lambda item: -item[0][0][1]):
        rng = np.random.default_rng(0)
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            # Variables, not constants, which TensorFlow would fold before timing.
            inputs = tf.Variable(tf.cast(rng.normal(size=input_shape), dtype))
            output_gradient = tf.Variable(tf.cast(rng.normal(
                size=input_shape[:3] + (kernel[3],)), dtype))
            ways = {"tensorflow": tf.raw_ops.Conv2DBackpropFilter(
                input=inputs, filter_sizes=list(kernel), out_backprop=output_gradient,
                strides=[1, 1, 1, 1], padding=padding)}
            if kernel[:2] == (1, 1):
                ways["matmul"] = cpu_gradients.weight_gradient_as_matmul(inputs, output_gradient,
                                                                  list(kernel))
            if kernel[:2] == (3, 3) and padding == "SAME":
                ways["swapped conv"] = cpu_gradients.weight_gradient_as_swapped_conv(inputs,
                                                                              output_gradient)
            picked = cpu_gradients.weight_gradient_way(kernel, input_shape[1:3], [1, 1, 1, 1],
                                                       padding, limits) or "tensorflow"
            session.run(tf.compat.v1.global_variables_initializer())
            expected = session.run(tf.cast(ways["tensorflow"], tf.float32))
            flops = 2 * np.prod(input_shape[:3]) * np.prod(kernel)
            cells = {}
            for name, fetch in ways.items():
                got = session.run(tf.cast(fetch, tf.float32))
                error = np.abs(got - expected).max() / np.abs(expected).max()
                # bfloat16 keeps 8 bits: sums in another order differ in the 3rd digit.
                tolerance = 1e-4 if dtype == tf.float32 else 3e-2
                assert error < tolerance, f"{name} differs from TensorFlow's gradient by {error}"
                seconds = median_seconds(session, fetch, args.repeats)
                cells[name] = f"{seconds * 1e3:5.1f} {flops / seconds / 1e9:4.0f}"
                if name == "tensorflow":
                    totals["tensorflow"] += count * seconds
                if name == picked:
                    totals["cpu_gradients"] += count * seconds
        print(f"{count:5d}  {str(list(input_shape)):>18} {str(list(kernel)):>16}  "
              f"{cells['tensorflow']:>12} {cells.get('matmul', '-'):>12} "
              f"{cells.get('swapped conv', '-'):>12}  {picked}")
    print(f"all stride-1 weight gradients of one step, timed alone: TensorFlow's kernel "
          f"{totals['tensorflow'] * 1e3:.1f} ms, cpu_gradients' choice "
          f"{totals['cpu_gradients'] * 1e3:.1f} ms")


def build_step(tf, args, limits):
    """bench/train_speed.py's training graph (train.py's, synthetic input) in
    --precision, its convs' weight gradients under `limits`: (session,
    train_op), warmed up."""
    graph, train_op, config = build_ours(argparse.Namespace(
        data_dir=None, precision=args.precision, model=args.model,
        image_size=args.image_size, batch_size=args.batch_size, stem=args.stem),
        weight_gradient_limits=limits)
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        session.run(tf.compat.v1.global_variables_initializer())
    session.run(train_op)  # warm-up
    return session, train_op


def compare_steps(tf, args):
    from suite.hardware.precision import cpu_flags
    from suite.training import cpu_gradients

    chosen = cpu_gradients.choose_limits(cpu_flags(), args.precision)
    limits = [cpu_gradients.Limits(*map(int, text.split(","))) for text in args.limits] \
        if args.limits else list(dict.fromkeys([cpu_gradients.NONE, chosen]))
    names = {cpu_gradients.NONE: "TensorFlow's gradients"}
    contenders = {names.get(l, f"limits {l.matmul_1x1},{l.swapped_3x3}"
                            + (" (chosen)" if l == chosen else "")): build_step(tf, args, l)
                  for l in limits}
    # About the work of 64 images at 224 px per round, whatever the image size.
    steps = args.steps or max(1, round(64 / args.batch_size * (224 / args.image_size) ** 2))
    speed = {name: [] for name in contenders}
    for _ in range(args.step_rounds):
        for name, (session, train_op) in contenders.items():
            start = time.perf_counter()
            for _ in range(steps):
                session.run(train_op)
            speed[name].append(steps * args.batch_size / (time.perf_counter() - start))
    first = next(iter(contenders))
    print(f"training step, {args.precision}, {args.step_rounds} rounds of {steps} steps "
          f"taking turns; ratio: the median of each round's ratio to {first}")
    for name in contenders:
        # Each round's own ratio: the machine's speed drifts between rounds.
        ratio = statistics.median(v / r for v, r in zip(speed[name], speed[first]))
        print(f"  {name:30s} {statistics.median(speed[name]):6.1f} images/s, ratio "
              f"{ratio:.2f}x (rounds: {', '.join(f'{v:.1f}' for v in speed[name])})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="layer_50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="runs per shape and way")
    parser.add_argument("--step_rounds", type=int, default=4,
                        help="turns per training graph (0: shapes only)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--stem", choices=("imagenet", "small"), default=None,
                        help="default: the one train.py chooses for --image_size")
    parser.add_argument("--limits", nargs="*", default=None,
                        help="weight-gradient limits of the training graphs compared, as "
                             "MATMUL_1X1,SWAPPED_3X3 (default: 0,0 and this CPU's choice)")
    parser.add_argument("--shapes", type=int, default=1, help="0: whole steps only")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per round (default: about 64 images at 224 px of work)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    import numpy as np
    from suite.plumbing import environment
    environment.configure()  # before TensorFlow loads
    import resnet
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        raise SystemExit("a GPU is visible: suite.training.cpu_gradients keeps TensorFlow's "
                         "gradients there")
    if args.shapes:
        compare_shapes(resnet, tf, np, args)
    if args.step_rounds:
        compare_steps(tf, args)


if __name__ == "__main__":
    main()
