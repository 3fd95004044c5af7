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

The training graph applies it explicitly:

    with cpu_gradients.faster_weight_gradients():
        logits = resnet.build(images, ..., is_train=True)

resnet.py itself knows nothing of it: the network is the network.
"""
import contextlib

import tensorflow as tf

MATMUL_1X1_MAX_SIZE = 7     # 1x1 convs on feature maps up to 7x7
SWAPPED_3X3_MAX_SIZE = 14   # 3x3 convs on feature maps up to 14x14


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


def conv_weight_gradient(inputs, output_gradient, kernel_shape, strides, padding):
    """The weight gradient of an NHWC float32 conv on the faster kernels where
    its shape is one measured faster; None where it is not."""
    feature_map = inputs.shape.as_list()[1:3]
    if list(strides) != [1, 1, 1, 1] or inputs.dtype != tf.float32 or None in feature_map:
        return None
    size = max(feature_map)
    if kernel_shape[:2] == [1, 1] and size <= MATMUL_1X1_MAX_SIZE:
        return weight_gradient_as_matmul(inputs, output_gradient, kernel_shape)
    if kernel_shape[:2] == [3, 3] and padding == "SAME" and size <= SWAPPED_3X3_MAX_SIZE:
        return weight_gradient_as_swapped_conv(inputs, output_gradient)
    return None


@tf.RegisterGradient("ResNetConv2D")
def _conv2d_gradients(op, output_gradient):
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
                                               kernel.shape.as_list(), strides, padding)
    if weight_gradient is None:
        weight_gradient = tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=tf.shape(kernel), out_backprop=output_gradient,
            **conv_attrs)
    return input_gradient, weight_gradient


def faster_weight_gradients():
    """Scope under which the convs built inside take _conv2d_gradients when no
    GPU is visible (GPUs keep cuDNN's gradients); elsewhere a scope that
    changes nothing. Only a graph that is differentiated needs it."""
    if tf.config.list_physical_devices("GPU"):
        return contextlib.nullcontext()
    return tf.compat.v1.get_default_graph().gradient_override_map({"Conv2D": "ResNetConv2D"})
