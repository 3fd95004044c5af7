"""Where a training step's time goes: one traced step of train.py's graph, by op.

    python bench/train_profile.py [--model layer_50] [--image_size 224] [--batch_size 32]
                                  [--precision fp32|bf16|fp16|auto]

Builds the same training graph as bench/train_speed.py (build_ours: the
product's suite.training.graph.build_training_graph on synthetic input, with
the stem train.py chooses for --image_size; momentum SGD, GATE_NONE, batch
norm in training mode, oneDNN on, the session settings of --precision: bf16
on a CPU is oneDNN's rewrite, whose kernels and casts the trace shows), runs two
warm-up steps, then one step with a full trace. The session runs one op at a
time (inter_op_parallelism_threads=1, each op still using every core), so the
op times add up to the step instead of overlapping.

Prints the time per op type, and for the three convolution passes (forward,
gradient of the input, gradient of the weights) the multiply-adds they did
and the GFLOP/s they reached: the figure to compare with the CPU's FMA peak.
The weight gradients that suite.training.cpu_gradients computes as matrix
products or swapped convs count as weight gradients.
"""
import argparse
import collections
import time

from train_speed import build_ours, conv_macs  # bench/ is the script's folder, on sys.path

# Graph op type of each convolution pass (the oneDNN rewrite renames the
# kernels to _MklNative..., the traced names, but keeps the node names).
CONV_PASSES = {"Conv2D": "forward", "Conv2DBackpropInput": "gradient of input",
               "Conv2DBackpropFilter": "gradient of weights"}


def weight_gradient_pass(op):
    """The pass name for the ops suite.training.cpu_gradients computes weight
    gradients with (a MatMul or a swapped Conv2D inside the gradients), else None."""
    if op.name.startswith("gradients/resnet/") and op.type in ("Conv2D", "MatMul"):
        return "gradient of weights"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="layer_50")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--precision", default="fp32", help="(default: %(default)s)")
    args = parser.parse_args()

    args.data_dir = None  # synthetic input
    graph, train_op, config = build_ours(args)  # imports TensorFlow after turning oneDNN on
    import tensorflow as tf

    config.inter_op_parallelism_threads = 1
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(train_op)
        session.run(train_op)
        metadata = tf.compat.v1.RunMetadata()
        start = time.perf_counter()
        session.run(train_op, run_metadata=metadata, options=tf.compat.v1.RunOptions(
            trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
        step_seconds = time.perf_counter() - start

    by_type, count = collections.Counter(), collections.Counter()
    pass_seconds, pass_macs = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            seconds = node.all_end_rel_micros / 1e6
            kernel = node.timeline_label.split(" = ")[1].split("(")[0] \
                if " = " in node.timeline_label else node.node_name
            by_type[kernel] += seconds
            count[kernel] += 1
            try:
                op = graph.get_operation_by_name(node.node_name)
            except KeyError:  # nodes added by the runtime
                continue
            name = weight_gradient_pass(op)
            if name:
                pass_seconds[name] += seconds
                pass_macs[name] += conv_macs(op) if op.type.startswith("Conv") \
                    else op.inputs[0].shape.num_elements() * op.outputs[0].shape.as_list()[1]
            elif op.type in CONV_PASSES:
                pass_seconds[CONV_PASSES[op.type]] += seconds
                pass_macs[CONV_PASSES[op.type]] += conv_macs(op)
    total = sum(by_type.values())
    print(f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}: "
          f"traced step {step_seconds:.2f} s ({args.batch_size / step_seconds:.2f} images/s), "
          f"ops one at a time, {total:.2f} s of op time")
    for kernel, seconds in by_type.most_common(12):
        print(f"  {kernel:40s} {seconds:6.3f} s {seconds / total:6.1%}  ({count[kernel]} ops)")
    print("convolutions by pass:")
    for name in CONV_PASSES.values():
        print(f"  {name:20s} {pass_seconds[name]:6.3f} s, {pass_macs[name] / 1e9:6.1f} G "
              f"multiply-adds, {2 * pass_macs[name] / pass_seconds[name] / 1e9:5.0f} GFLOP/s")


if __name__ == "__main__":
    main()
