"""suite/training/cpu_gradients.py: the same gradients as TensorFlow's, the
faster kernels only where they were measured faster."""
import contextlib

import numpy as np
import pytest
import tensorflow as tf

import resnet
from suite.training import cpu_gradients


ON_GPU = bool(tf.config.list_physical_devices("GPU"))  # GPUs keep TensorFlow's gradients


# The AVX2 limits, given explicitly: the same test on every CPU.
AVX2 = cpu_gradients.Limits(matmul_1x1=7, swapped_3x3=14)


@pytest.mark.parametrize("size,kernel,stride,faster", [
    (7, 1, 1, True),    # 1x1 on a small map: a matrix product
    (8, 1, 1, False),   # above the 1x1 limit: TensorFlow's kernel
    (14, 3, 1, True),   # 3x3 on a small map: the batch/channel-swapped conv
    (15, 3, 1, False),  # above the 3x3 limit
    (14, 3, 2, False),  # strided: TensorFlow's kernel
])
def test_cpu_weight_gradients_equal_tensorflows(size, kernel, stride, faster):
    # Two convs on the same input and weights, one under faster_weight_gradients:
    # both gradients must agree, and the faster kernels be used only where meant.
    rng = np.random.default_rng(size + kernel + stride)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        x = tf.constant(rng.normal(size=(3, size, size, 8)).astype(np.float32))
        w = tf.constant(rng.normal(size=(kernel, kernel, 8, 16)).astype(np.float32))
        reference = tf.nn.conv2d(x, w, stride, "SAME")
        with cpu_gradients.faster_weight_gradients(limits=AVX2):
            overridden = tf.nn.conv2d(x, w, stride, "SAME")
        weights = rng.normal(size=reference.shape.as_list()).astype(np.float32)
        expected = tf.gradients(tf.reduce_sum(reference * weights), [x, w])
        before = len(graph.get_operations())
        got = tf.gradients(tf.reduce_sum(overridden * weights), [x, w])
        added = [op.type for op in graph.get_operations()[before:]]
        for e, g in zip(session.run(expected), session.run(got)):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
    assert ("Conv2DBackpropFilter" not in added) == (faster and not ON_GPU)


@pytest.mark.parametrize("faster", [True, False])
def test_the_network_takes_the_cpu_weight_gradients_only_when_asked(faster):
    # resnet.py is the network and nothing else; train.py's training graph
    # builds it under faster_weight_gradients().
    with tf.Graph().as_default() as graph:
        scope = (cpu_gradients.faster_weight_gradients(limits=AVX2) if faster
                 else contextlib.nullcontext())
        with scope:
            logits = resnet.build(tf.zeros([2, 32, 32, 3]), "layer_14", 5, is_train=True)
        convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
        overridden = [op for op in convs if "_gradient_op_type" in op.node_def.attr]
        tf.gradients(tf.reduce_sum(logits), tf.compat.v1.trainable_variables())
        filter_gradients = [op for op in graph.get_operations()
                            if op.type == "Conv2DBackpropFilter"]
    assert len(convs) == 14
    if faster and not ON_GPU:
        assert len(overridden) == 14
        # At 32 px most feature maps are small: most weight gradients avoid the slow kernel.
        assert len(filter_gradients) < 7
    else:
        assert overridden == [] and len(filter_gradients) == 14


@pytest.mark.parametrize("flags,precision,expected", [
    ({"avx2", "fma"}, "fp32", (7, 14)),                                  # AMD EPYC, AVX2
    ({"avx2", "avx512f", "avx512_bf16"}, "fp32", (0, 0)),                # AMD EPYC, Zen 4
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16", (8, 14)),
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16", (8, 14)),  # Xeon
    ({"avx2", "avx512f"}, "fp16", (0, 0)),                               # left alone
])
def test_limits_follow_the_cpu_and_the_precision(flags, precision, expected):
    assert cpu_gradients.choose_limits(frozenset(flags), precision) == expected


def test_no_limits_leave_the_graph_alone():
    with tf.Graph().as_default() as graph:
        with cpu_gradients.faster_weight_gradients(limits=cpu_gradients.NONE):
            tf.nn.conv2d(tf.zeros([1, 4, 4, 2]), tf.zeros([1, 1, 2, 2]), 1, "SAME")
        [conv] = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert "_gradient_op_type" not in conv.node_def.attr
