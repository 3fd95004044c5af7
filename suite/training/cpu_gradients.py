"""Faster weight gradients for the network's convs when training on a CPU.

oneDNN 3.7 (TensorFlow 2.21's) computes a conv's weight gradient with its
older AVX2 kernels (jit:avx2, jit_1x1:avx2): they ran at ~87 GFLOP/s in a
ResNet-50 step on a 2-core AVX2 machine, against ~145 for the forward pass and
the input gradient (bench/train_profile.py). On small feature maps the same
sums run faster as a matrix product (1x1 convs) or as a forward convolution
with the batch and channel axes swapped (3x3 convs); bench/weight_gradients.py
times every shape of the network both ways and set the limits below. Only the
weight gradient changes: the forward pass and the input gradient are
TensorFlow's own.

Which shapes pay depends on the CPU and the precision: the limits were
measured per kind of CPU (choose_limits(), MEASURED_LIMITS), and the
training graph applies them explicitly, for its precision:

    with cpu_gradients.faster_weight_gradients(precision="bf16"):
        logits = resnet.build(images, ..., is_train=True)

resnet.py itself knows nothing of it: the network is the network.
suite.training.step applies it.
"""
import collections
import contextlib

import tensorflow as tf

from suite.hardware.precision import cpu_flags


class Limits(collections.namedtuple("Limits", "matmul_1x1 swapped_3x3")):
    """The largest feature-map side on which a stride-1 1x1 conv's weight
    gradient is computed as a matrix product, and a stride-1 'SAME' 3x3
    conv's as a swapped conv; 0: never."""
    __slots__ = ()


NONE = Limits(0, 0)  # TensorFlow's own kernel for every shape

# bench/weight_gradients.py, shape by shape and whole training steps
# (BENCHMARKS.md, "Weight gradients on a CPU"), keyed by (CPU kind,
# precision); a pair not here takes TensorFlow's kernel for every shape.
MEASURED_LIMITS = {
    # 2-core AMD EPYC with AVX2 only: oneDNN's weight gradients run on its
    # older AVX2 kernels (jit:avx2), ~87 GFLOP/s against ~145 for the forward
    # pass; a 3x3 conv on a 1x1 map took 20-28 ms against 4.1-4.6 swapped.
    # Whole steps: 1.29-1.48x at 32 px (layer_14), 1.04-1.13x at 224 px.
    ("avx2", "fp32"): Limits(7, 14),
    # 2-core AMD EPYC (Zen 4) with AVX-512, in fp32: not there. oneDNN's
    # AVX-512 kernel is as fast as the swapped conv on 1x1 and 7x7 maps and
    # faster on 14x14 (102 against 150 ms); the matrix products win on maps
    # up to 8x8 shape by shape, but whole steps gained nothing (0.99x at
    # 32 px, 0.92-1.02x at 224 px).
    # The same CPU in bfloat16 (avx512_bf16, oneDNN's rewrite): both win again,
    # the swapped conv most on the 1x1 map (7.9 against 22 ms) and by 10-40%
    # on 7x7 and 14x14 maps. Whole steps: 1.10-1.24x at 32 px, 1.07x at 224 px.
    ("avx512", "bf16"): Limits(8, 14),
}


def cpu_kind(cpu_flags):
    """The row of MEASURED_LIMITS a CPU with these /proc/cpuinfo flags takes.
    CPUs with AMX take the AVX-512 rows: not measured there (no such machine
    in this project's sessions so far); bench/weight_gradients.py
    --precision bf16 on one says whether they hold."""
    return "avx512" if "avx512f" in cpu_flags else "avx2"


def choose_limits(cpu_flags, precision="fp32"):
    """The Limits measured for this kind of CPU in `precision` ("fp32",
    "bf16"; "fp16" graphs are left alone), NONE where none pays."""
    return MEASURED_LIMITS.get((cpu_kind(cpu_flags), precision), NONE)


def weight_gradient_as_matmul(inputs, output_gradient, kernel_shape):
    """A stride-1 1x1 conv's weight gradient: dW[c, o] = sum over images and
    pixels of x[., c] * dy[., o], one matrix product."""
    depth_in, depth_out = kernel_shape[2:]
    return tf.reshape(tf.matmul(tf.reshape(inputs, [-1, depth_in]),
                                tf.reshape(output_gradient, [-1, depth_out]),
                                transpose_a=True), kernel_shape)


def weight_gradient_as_swapped_conv(inputs, output_gradient):
    """A stride-1 'SAME' 3x3 conv's weight gradient:
    dW[i, j, c, o] = sum_{n,h,w} x_padded[n, h+i, w+j, c] * dy[n, h, w, o],
    which is a conv of x as [c, H, W, n], padded by 1 pixel, with dy as a
    [H, W, n, o] filter: [c, 3, 3, o], then transposed to [3, 3, c, o]."""
    # Copy x only once dy exists: without the dependency TensorFlow may make
    # these copies during the forward pass and hold them until backprop.
    with tf.control_dependencies([output_gradient]):
        swapped_inputs = tf.transpose(inputs, [3, 1, 2, 0])
    swapped = tf.nn.conv2d(swapped_inputs, tf.transpose(output_gradient, [1, 2, 0, 3]), 1,
                           padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.transpose(swapped, [1, 2, 0, 3])


def weight_gradient_way(kernel_shape, feature_map, strides, padding, limits):
    """"matmul" or "swapped conv" where `limits` take a conv of this shape
    off TensorFlow's kernel, else None."""
    if list(strides) != [1, 1, 1, 1] or None in feature_map:
        return None
    size = max(feature_map)
    if list(kernel_shape[:2]) == [1, 1] and size <= limits.matmul_1x1:
        return "matmul"
    if list(kernel_shape[:2]) == [3, 3] and padding == "SAME" and size <= limits.swapped_3x3:
        return "swapped conv"
    return None


def conv_weight_gradient(inputs, output_gradient, kernel_shape, strides, padding, limits):
    """The weight gradient of an NHWC float32 conv on the faster kernels where
    `limits` say its shape is faster there; None where it is not."""
    if inputs.dtype != tf.float32:
        return None
    way = weight_gradient_way(kernel_shape, inputs.shape.as_list()[1:3], strides, padding,
                              limits)
    if way == "matmul":
        return weight_gradient_as_matmul(inputs, output_gradient, kernel_shape)
    if way == "swapped conv":
        return weight_gradient_as_swapped_conv(inputs, output_gradient)
    return None


def _conv2d_gradients(op, output_gradient, limits):
    """Conv2D's gradients as TensorFlow computes them, except the weight
    gradient of the shapes conv_weight_gradient() handles."""
    inputs, kernel = op.inputs
    strides, padding = op.get_attr("strides"), op.get_attr("padding").decode()
    conv_attrs = dict(strides=strides, padding=padding,
                      explicit_paddings=op.get_attr("explicit_paddings"),
                      data_format=op.get_attr("data_format").decode(),
                      dilations=op.get_attr("dilations"))
    input_gradient = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(inputs), filter=kernel, out_backprop=output_gradient, **conv_attrs)
    weight_gradient = None
    if conv_attrs["data_format"] == "NHWC" and list(conv_attrs["dilations"]) == [1, 1, 1, 1]:
        weight_gradient = conv_weight_gradient(inputs, output_gradient,
                                               kernel.shape.as_list(), strides, padding, limits)
    if weight_gradient is None:
        weight_gradient = tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=tf.shape(kernel), out_backprop=output_gradient,
            **conv_attrs)
    return input_gradient, weight_gradient


def _gradient_name(limits):
    """The name of the gradient function for `limits`, registered on first use:
    a graph's convs take their gradient function by name when they are built,
    and it runs later, when the graph is differentiated."""
    name = f"ResNetConv2D_{limits.matmul_1x1}_{limits.swapped_3x3}"
    try:
        tf.RegisterGradient(name)(lambda op, grad: _conv2d_gradients(op, grad, limits))
    except KeyError:  # registered before, by an earlier graph
        pass
    return name


def faster_weight_gradients(precision="fp32", limits=None):
    """Scope under which the convs built inside take _conv2d_gradients, with
    `limits` (default: choose_limits() for this CPU and `precision`), when no
    GPU is visible (GPUs keep cuDNN's gradients); elsewhere, or where no shape
    pays, a scope that changes nothing. Only a graph that is differentiated
    needs it. `precision`: a name or a suite.hardware.precision.Precision (bf16 on a CPU is
    the float32 graph that oneDNN rewrites, and its convs run bf16 kernels)."""
    if tf.config.list_physical_devices("GPU"):
        return contextlib.nullcontext()
    if limits is None:
        limits = choose_limits(cpu_flags(), getattr(precision, "name", precision))
    if limits == NONE:
        return contextlib.nullcontext()
    return tf.compat.v1.get_default_graph().gradient_override_map(
        {"Conv2D": _gradient_name(limits)})
