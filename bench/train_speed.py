"""Training speed: our ResNet against Keras' ResNet, side by side, in one run.

    python bench/train_speed.py [--models layer_50] [--image_size 224] [--batch_size 32]
                                [--steps 3] [--rounds 2] [--data_dir DIR]
                                [--mixed_precision] [--xla]

Each measurement runs in its own process (so peak memory is per contender),
and the contenders take turns (ours, Keras, ours, Keras, ...) so that drift on
a shared machine hits both. Each process builds its model, runs one warm-up
step, then times --steps training steps (momentum SGD, softmax cross-entropy,
batch norm in training mode). Ours: train.py's graph (tf.compat.v1 Session,
oneDNN on, fused batch norm). Keras: tf.keras.applications.ResNet50/101/152
(weights=None) in a plain tf.function training step. Input: synthetic
in-memory images, or with --data_dir, real TFRecords through FlowIO's
training pipeline (ours only; Keras gets the synthetic batch).

--mixed_precision and --xla switch both contenders to their GPU settings
(ours: train.py's --mixed_precision and --xla; Keras: the mixed_float16
policy with a LossScaleOptimizer, and jit_compile=True). They run on a CPU,
slowly; they are there so one command measures a GPU when one is lent:
    python bench/train_speed.py --batch_size 256 --mixed_precision --xla --steps 20

Printed per contender: images/s (median over rounds), the ratio, peak RSS,
and the fraction of the CPU's FMA peak, counting a training step as 3x the
forward multiply-adds (counted from the graph's conv and matmul shapes).
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERAS_MODELS = {"layer_50": "ResNet50", "layer_101": "ResNet101", "layer_152": "ResNet152"}


def fma_peak_gflops():
    """cores x 2 FMA units x 8 float32 lanes (AVX2) x 2 flops x clock."""
    cores = os.cpu_count() or 1
    ghz = 3.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(l.split(":")[1]) for l in f if l.startswith("cpu MHz")]
        if mhz:
            ghz = max(mhz) / 1000
    except OSError:
        pass
    return cores * 2 * 8 * 2 * ghz, cores, ghz


def conv_macs(op):
    """Multiply-adds of a convolution op: the same count for the forward pass
    (Conv2D) and its two gradients (Conv2DBackpropInput, Conv2DBackpropFilter)."""
    if op.type == "Conv2D":
        out, kernel = op.outputs[0].shape.as_list(), op.inputs[1].shape.as_list()
    elif op.type == "Conv2DBackpropInput":  # inputs: input sizes, filter, output gradient
        out, kernel = op.inputs[2].shape.as_list(), op.inputs[1].shape.as_list()
    else:  # Conv2DBackpropFilter: input, filter sizes, output gradient
        out, kernel = op.inputs[2].shape.as_list(), op.outputs[0].shape.as_list()
    return out[0] * out[1] * out[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]


def forward_macs(graph):
    """Multiply-adds of a forward pass, from its conv and matmul shapes."""
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            total += conv_macs(op)
        elif op.type == "MatMul":
            a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
            total += a[0] * a[-1] * b[-1]
    return total


def build_ours(args, faster_weight_gradients=True):
    """train.py's training graph over synthetic images (or --data_dir's
    TFRecords): (graph, train_op). bench/train_profile.py times the same one;
    bench/weight_gradients.py also builds it without the CPU weight gradients."""
    sys.path.insert(0, REPO)
    import numpy as np
    import cli
    cli.configure_environment()  # before TensorFlow loads
    import cpu_gradients
    import FlowIO
    import resnet
    import tensorflow as tf
    import tf_slim as slim

    graph = tf.Graph()
    with graph.as_default():
        if args.data_dir:
            dataset = FlowIO.make_dataset(args.data_dir, "train", args.image_size,
                                          args.batch_size, training=True)
            images, labels, _ = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
            num_classes = len(FlowIO.load_dataset_info(args.data_dir)["classes"])
        else:
            rng = np.random.default_rng(0)
            images = tf.constant(rng.normal(size=(args.batch_size, args.image_size,
                                                  args.image_size, 3)).astype(np.float32))
            labels = tf.constant(rng.integers(0, 10, args.batch_size).astype(np.int32))
            num_classes = 10
        faster = (cpu_gradients.faster_weight_gradients() if faster_weight_gradients
                  else contextlib.nullcontext())
        with faster:  # as train.py builds it
            logits = resnet.build(images, args.model, num_classes, is_train=True,
                                  mixed_precision=args.mixed_precision)
        loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits) + tf.add_n(
            [tf.cast(l, tf.float32) for l in tf.compat.v1.losses.get_regularization_losses()])
        step = tf.compat.v1.train.get_or_create_global_step()
        optimizer = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9)
        if args.mixed_precision:
            optimizer = tf.compat.v1.mixed_precision.MixedPrecisionLossScaleOptimizer(
                optimizer, "dynamic")
        train_op = slim.learning.create_train_op(  # as train.py builds it
            loss, optimizer, global_step=step,
            check_numerics=False, gate_gradients=tf.compat.v1.train.Optimizer.GATE_NONE)
    return graph, train_op


def measure_ours(args):
    graph, train_op = build_ours(args)
    import hardware
    import resnet
    import tensorflow as tf

    config = hardware.session_config(args.xla)
    with tf.Graph().as_default():  # count the forward pass of one image
        resnet.build(tf.zeros([1, args.image_size, args.image_size, 3]), args.model, 10, False)
        macs = forward_macs(tf.compat.v1.get_default_graph())
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(train_op)
        start = time.perf_counter()
        for _ in range(args.steps):
            session.run(train_op)
        seconds = time.perf_counter() - start
    return seconds, macs


def measure_keras(args):
    import numpy as np
    import tensorflow as tf

    if args.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = getattr(tf.keras.applications, KERAS_MODELS[args.model])(
        weights=None, input_shape=(args.image_size, args.image_size, 3), classes=10)
    optimizer = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    if args.mixed_precision:
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch_size, args.image_size, args.image_size, 3))
                         .astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, args.batch_size).astype(np.int32))

    @tf.function(jit_compile=args.xla or None)
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
            scaled = optimizer.scale_loss(loss) if args.mixed_precision else loss
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    train_step()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step().numpy()
    return time.perf_counter() - start, None


def child(args):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # Keras' best setting here too
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seconds, macs = (measure_ours if args.contender == "ours" else measure_keras)(args)
    import tensorflow as tf
    print(json.dumps({"images_per_second": args.steps * args.batch_size / seconds,
                      "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "forward_macs": macs}))


def run_child(args, contender, model):
    command = [sys.executable, os.path.abspath(__file__), "--child", contender, "--models", model,
               "--image_size", str(args.image_size), "--batch_size", str(args.batch_size),
               "--steps", str(args.steps)] + (["--data_dir", args.data_dir] if args.data_dir else []) \
        + (["--mixed_precision"] if args.mixed_precision else []) + (["--xla"] if args.xla else [])
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{contender} {model} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="layer_50",
                        help="comma-separated ResNet_demo keys (default: %(default)s)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="turns per contender")
    parser.add_argument("--data_dir", default=None, help="read real TFRecords (ours)")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="float16 compute with loss scaling, both contenders (for GPUs)")
    parser.add_argument("--xla", action="store_true", help="XLA for both contenders (for GPUs)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.contender, args.model = args.child, args.models
        return child(args)

    peak, cores, ghz = fma_peak_gflops()
    print(f"FMA peak assumed: {cores} cores x 2 FMA x 8 lanes x 2 flops x {ghz:.2f} GHz "
          f"= {peak:.0f} GFLOP/s; batch {args.batch_size}, {args.image_size} px, "
          f"{args.steps} timed steps x {args.rounds} rounds, "
          f"input {'TFRecords ' + args.data_dir if args.data_dir else 'synthetic'}"
          f"{', mixed precision' if args.mixed_precision else ''}{', XLA' if args.xla else ''}")
    for model in args.models.split(","):
        contenders = ["ours"] + (["keras"] if model in KERAS_MODELS else [])
        runs = {c: [] for c in contenders}
        for _ in range(args.rounds):
            for contender in contenders:
                runs[contender].append(run_child(args, contender, model))
        ours = statistics.median(r["images_per_second"] for r in runs["ours"])
        macs = runs["ours"][0]["forward_macs"]
        device = runs["ours"][0]["device"]
        share = (f"{ours * 3 * 2 * macs / 1e9 / peak:.0%} of the CPU's FMA peak"
                 if device == "CPU" else "on the GPU")
        print(f"{model} on {device}: ours {ours:.2f} img/s ({3 * 2 * macs / 1e9:.1f} GFLOP "
              f"per image trained, {share}), peak RSS "
              f"{max(r['peak_rss_mb'] for r in runs['ours']):.0f} MB")
        if "keras" in runs:
            keras = statistics.median(r["images_per_second"] for r in runs["keras"])
            print(f"{model}: Keras {KERAS_MODELS[model]} {keras:.2f} img/s, peak RSS "
                  f"{max(r['peak_rss_mb'] for r in runs['keras']):.0f} MB; "
                  f"ours / Keras = {ours / keras:.2f}x")


if __name__ == "__main__":
    main()
