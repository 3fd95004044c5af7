"""Training speed: our ResNet against Keras' ResNet, side by side, in one run.

    python bench/train_speed.py [--models layer_50] [--image_size 224] [--batch_size 32]
                                [--steps 3] [--rounds 2] [--data_dir DIR]
                                [--precision fp32|bf16|fp16|auto|fp32,bf16] [--xla]
                                [--stem imagenet|small]

Each measurement runs in its own process (so peak memory is per contender),
and the contenders take turns (ours, Keras, ours, Keras, ...) so that drift on
a shared machine hits both. Each process builds its model, runs one warm-up
step, then times --steps training steps (momentum SGD, softmax cross-entropy,
batch norm in training mode). Ours: train.py's graph, built by the product's
own suite.training.graph.build_training_graph (tf.compat.v1 Session, oneDNN
on, fused batch norm), with the stem train.py would choose for --image_size
(suite.training.config.default_stem: the small stem up to 32 px) unless
--stem says. Keras: tf.keras.applications.ResNet50/101/152 (weights=None) in
a plain tf.function training step. Input: synthetic in-memory images, or
with --data_dir, real TFRecords through the training input pipeline
(suite.data.pipeline; ours only; Keras gets the synthetic batch).

--precision runs both contenders in that precision, as train.py's
--precision does (suite.hardware.precision.choose_precision; default fp32):
ours with train.py's graph and session settings, Keras with the matching policy (bf16:
mixed_bfloat16; fp16: mixed_float16 and a LossScaleOptimizer). A
comma-separated list (fp32,bf16) measures each precision in turn, all
contenders of all precisions alternating, and prints each one's speed
against ours in fp32. --xla compiles both (jit_compile=True for Keras). For
a GPU, when one is lent:
    python bench/train_speed.py --batch_size 256 --precision fp16,bf16 --xla --steps 20

Printed per contender: images/s (median over rounds), the ratios, peak RSS,
and the fraction of the CPU's peak in that precision (peak_gflops(): the
FMA peak for fp32, AMX's or AVX-512 BF16's for bf16), counting a training
step as 3x the forward multiply-adds (counted from the graph's conv and
matmul shapes).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERAS_MODELS = {"layer_50": "ResNet50", "layer_101": "ResNet101", "layer_152": "ResNet152"}
KERAS_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def peak_gflops(precision, cpuinfo="/proc/cpuinfo"):
    """(GFLOP/s, how it was computed) of this CPU's peak in `precision`:
    cores x flops per cycle x clock. fp32: 2 FMA units x 8 float32 lanes
    (AVX2, and AMD's AVX-512, which runs on 256-bit units) or 16 (Intel's
    AVX-512) x 2 flops. bf16: AMX's 1,024 flops per cycle (amx_bf16); AVX-512
    BF16's dot products, twice fp32's; else fp32's (emulated)."""
    sys.path.insert(0, REPO)
    from suite.hardware.precision import cpu_flags

    cores = os.cpu_count() or 1
    ghz, vendor = 3.0, ""
    try:
        with open(cpuinfo) as f:
            lines = f.readlines()
        mhz = [float(l.split(":")[1]) for l in lines if l.startswith("cpu MHz")]
        ghz = max(mhz) / 1000 if mhz else ghz
        vendor = next((l.split(":")[1].strip() for l in lines if l.startswith("vendor_id")), "")
    except OSError:
        pass
    flags = cpu_flags(cpuinfo)
    lanes = 16 if "avx512f" in flags and vendor == "GenuineIntel" else 8
    per_cycle, how = 2 * lanes * 2, f"2 FMA x {lanes} lanes x 2 flops"
    if precision == "bf16" and "amx_bf16" in flags:
        per_cycle, how = 1024, "AMX 1,024 bf16 flops"
    elif precision == "bf16" and "avx512_bf16" in flags:
        per_cycle, how = 2 * per_cycle, f"AVX-512 BF16 2 x ({how})"
    return (cores * per_cycle * ghz,
            f"{cores} cores x {how} x {ghz:.2f} GHz = {cores * per_cycle * ghz:.0f} GFLOP/s")


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


def build_ours(args, weight_gradient_limits=None):
    """train.py's training graph, built by the product's own code
    (suite.training.graph.build_training_graph with the defaults of
    suite.training.config), over a fixed synthetic batch (or --data_dir's
    TFRecords through the input pipeline) in args.precision: (graph,
    train_op, session config). The stem is the one train.py would choose at
    args.image_size unless args.stem says. bench/train_profile.py times the
    same graph; bench/weight_gradients.py also builds it with other
    weight_gradient_limits (a cpu_gradients.Limits; default: this CPU's)."""
    sys.path.insert(0, REPO)
    import numpy as np
    from suite.plumbing import environment
    environment.configure()  # before TensorFlow loads
    import tensorflow as tf
    from suite.data.contract import load_dataset_info
    from suite.hardware.precision import choose_precision, session_config
    from suite.training.config import Network, default_stem, fixed_config
    from suite.training.graph import build_training_graph

    precision = choose_precision(getattr(args, "precision", "fp32"))
    labels = (load_dataset_info(args.data_dir)["classes"] if args.data_dir
              else [str(label) for label in range(10)])
    network = Network(model=args.model, shortcut="A",
                      stem=getattr(args, "stem", None) or default_stem(args.image_size),
                      image_size=args.image_size, labels=tuple(labels))
    config = fixed_config(network, precision, args.batch_size, args.data_dir,
                          getattr(args, "xla", False))
    graph = tf.Graph()
    with graph.as_default():
        batch = None  # with --data_dir: the input pipeline
        if not args.data_dir:
            rng = np.random.default_rng(0)
            images = tf.constant(rng.normal(size=(args.batch_size, args.image_size,
                                                  args.image_size, 3)).astype(np.float32))
            labels = tf.constant(rng.integers(0, 10, args.batch_size).astype(np.int32))
            batch = (images, tf.one_hot(labels, 10), labels)
        train_op = build_training_graph(config, batch, weight_gradient_limits)["train_op"]
    return graph, train_op, session_config(config.xla, precision)


def measure_ours(args):
    graph, train_op, config = build_ours(args)
    import tensorflow as tf
    from suite.model.network import build_network
    from suite.training.config import Network, default_stem

    # Count the forward pass of one image, of the network build_ours trains
    # (the same stem).
    network = Network(model=args.model, shortcut="A",
                      stem=args.stem or default_stem(args.image_size),
                      image_size=args.image_size, labels=tuple(str(i) for i in range(10)))
    with tf.Graph().as_default():
        build_network(tf.zeros([1, args.image_size, args.image_size, 3]), network.manifest(),
                      is_train=False)
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

    tf.keras.mixed_precision.set_global_policy(KERAS_POLICIES[args.precision])
    model = getattr(tf.keras.applications, KERAS_MODELS[args.model])(
        weights=None, input_shape=(args.image_size, args.image_size, 3), classes=10)
    optimizer = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    scaled = args.precision == "fp16"  # float16 needs loss scaling; bfloat16 does not
    if scaled:
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
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
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


def run_child(args, contender, model, precision):
    command = [sys.executable, os.path.abspath(__file__), "--child", contender, "--models", model,
               "--image_size", str(args.image_size), "--batch_size", str(args.batch_size),
               "--steps", str(args.steps), "--precision", precision] \
        + (["--data_dir", args.data_dir] if args.data_dir else []) \
        + (["--xla"] if args.xla else []) + (["--stem", args.stem] if args.stem else [])
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{contender} {precision} {model} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def resolve_precisions(text):
    """--precision's list, "auto" resolved as train.py resolves it (printed)."""
    sys.path.insert(0, REPO)
    from suite.plumbing import environment
    environment.configure()  # before TensorFlow loads
    from suite.hardware.precision import choose_precision

    precisions = []
    for name in text.split(","):
        chosen = choose_precision(name)
        if name == "auto":
            print(f"auto: {chosen}")
        precisions.append(chosen.name)
    return list(dict.fromkeys(precisions))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="layer_50",
                        help="comma-separated ResNet_demo keys (default: %(default)s)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="turns per contender")
    parser.add_argument("--data_dir", default=None, help="read real TFRecords (ours)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16, fp16 or auto, or a comma-separated list of them "
                             "(default: %(default)s)")
    parser.add_argument("--mixed_precision", action="store_const", dest="precision",
                        const="fp16", help="the same as --precision fp16 (the older name)")
    parser.add_argument("--xla", action="store_true", help="XLA for both contenders (for GPUs)")
    parser.add_argument("--stem", choices=("imagenet", "small"), default=None,
                        help="our network's stem (default: the one train.py chooses for "
                             "--image_size: small up to 32 px, else imagenet)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.contender, args.model = args.child, args.models
        return child(args)

    precisions = resolve_precisions(args.precision)
    print(f"batch {args.batch_size}, {args.image_size} px, {args.steps} timed steps x "
          f"{args.rounds} rounds, input "
          f"{'TFRecords ' + args.data_dir if args.data_dir else 'synthetic'}"
          f"{', XLA' if args.xla else ''}")
    for precision in precisions:
        print(f"{precision} peak assumed: {peak_gflops(precision)[1]}")
    for model in args.models.split(","):
        contenders = [(c, p) for p in precisions
                      for c in ["ours"] + (["keras"] if model in KERAS_MODELS else [])]
        runs = {c: [] for c in contenders}
        for _ in range(args.rounds):
            for contender in contenders:
                runs[contender].append(run_child(args, contender[0], model, contender[1]))
        speed = {c: statistics.median(r["images_per_second"] for r in runs[c]) for c in runs}
        reference = speed[("ours", precisions[0])]
        for precision in precisions:
            ours = speed[("ours", precision)]
            first = runs[("ours", precision)][0]
            macs, device = first["forward_macs"], first["device"]
            share = (f"{ours * 3 * 2 * macs / 1e9 / peak_gflops(precision)[0]:.0%} of the "
                     f"CPU's {precision} peak" if device == "CPU" else "on the GPU")
            versus = (f", {ours / reference:.2f}x ours {precisions[0]}"
                      if precision != precisions[0] else "")
            print(f"{model} {precision} on {device}: ours {ours:.2f} img/s{versus} "
                  f"({3 * 2 * macs / 1e9:.1f} GFLOP per image trained, {share}), peak RSS "
                  f"{max(r['peak_rss_mb'] for r in runs[('ours', precision)]):.0f} MB")
            if ("keras", precision) in speed:
                keras = speed[("keras", precision)]
                print(f"{model} {precision}: Keras {KERAS_MODELS[model]} "
                      f"({KERAS_POLICIES[precision]}) {keras:.2f} img/s, peak RSS "
                      f"{max(r['peak_rss_mb'] for r in runs[('keras', precision)]):.0f} MB; "
                      f"ours / Keras = {ours / keras:.2f}x")


if __name__ == "__main__":
    main()
