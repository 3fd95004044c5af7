"""suite/training/step.py: a bf16 training step keeps float32 variables and
trains, on a CPU with bfloat16 instructions."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from helpers import COLOURS
from suite.hardware import precision as hardware_precision
from suite.training import stages
from suite.training.config import Network, fixed_config
from suite.training.step import make_optimizer, scaled_for_pretrained, training_step


CAN_BF16 = ("avx512f" in hardware_precision.cpu_flags()
            or bool(hardware_precision.gpu_compute_capabilities()))


needs_bf16 = pytest.mark.skipif(not CAN_BF16, reason="TensorFlow computes bfloat16 on a "
                                                     "CPU only with AVX-512")


def colour_batch(rng, size=32, batch=24):
    """Learnable images: one dominant colour per class, plus noise."""
    labels = rng.integers(0, len(COLOURS), batch)
    colours = np.array(list(COLOURS.values()), np.float32)[labels]
    images = colours[:, None, None, :] + rng.normal(0, 25, (batch, size, size, 3))
    return ((images - 128) / 64).astype(np.float32), labels.astype(np.int32)


def dtype_of(node):
    for key in ("T", "dtype", "DstT"):
        if key in node.attr and node.attr[key].type:
            return tf.dtypes.as_dtype(node.attr[key].type)
    return None


@needs_bf16
@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_bf16_training_graph_trains_with_float32_variables(device):
    # "CPU": train.py's float32 graph, rewritten to bfloat16 by the session;
    # "GPU": the graph a GPU gets, built in bfloat16 (run here on the CPU).
    precision = hardware_precision.Precision("bf16", device, "test")
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        global_step = tf.compat.v1.train.get_or_create_global_step()
        # train.py's step for layer_14 with the ImageNet stem at 32 px, at a
        # constant learning rate, on the plain cross-entropy (no L2, no
        # label smoothing), so the loss can fall far in a few steps.
        network = Network(model="layer_14", shortcut="A", stem="imagenet", image_size=32,
                          labels=tuple(COLOURS))
        config = fixed_config(network, precision, batch_size=24)
        config = dataclasses.replace(config, optimisation=dataclasses.replace(
            config.optimisation, weight_decay=0.0, label_smoothing=0.0))
        optimizer = make_optimizer(config.optimisation, 0.02, precision)
        step = training_step(config, (images, tf.one_hot(labels, len(COLOURS)), labels),
                             optimizer, global_step)
        train_op, loss = step.train_op, step.loss
        assert all(v.dtype.base_dtype == tf.float32 for v in tf.compat.v1.global_variables()
                   if v.dtype.base_dtype.is_floating)  # (the global step is an int64)
        assert loss.dtype == tf.float32
        session_config = hardware_precision.session_config(False, precision)
        with tf.compat.v1.Session(config=session_config) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            losses = []
            for step in range(24):
                x, y = colour_batch(rng)
                metadata = tf.compat.v1.RunMetadata()
                options = tf.compat.v1.RunOptions(output_partition_graphs=step == 0)
                losses.append(session.run([train_op, loss], {images: x, labels: y},
                                          options=options, run_metadata=metadata)[1])
                if step == 0:
                    nodes = [n for g in metadata.partition_graphs for n in g.node]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    # What ran: convs and batch norms in bfloat16; the variables, their
    # updates, the batch-norm statistics and the softmax cross-entropy in float32.
    convs = [n for n in nodes if "Conv2D" in n.op or "MatMul" in n.op]
    assert convs and all(dtype_of(n) == tf.bfloat16 for n in convs)
    kept = [n for n in nodes if n.op in ("VarHandleOp", "ReadVariableOp", "AssignSubVariableOp")
            or "ApplyMomentum" in n.op or "SoftmaxCrossEntropy" in n.op]
    assert all(dtype_of(n) in (tf.float32, tf.int64) for n in kept)  # int64: the global step
    assert any("ApplyMomentum" in n.op for n in kept)
    batch_norms = [n for n in nodes if "FusedBatchNorm" in n.op and "Grad" not in n.op]
    assert batch_norms and all(n.attr["U"].type == tf.float32.as_datatype_enum
                               for n in batch_norms)
    assert any(dtype_of(n) == tf.bfloat16 for n in batch_norms)


def test_the_pretrained_layers_learn_at_their_share_of_the_rate_and_the_classifier_at_all():
    stage = stages.Stage("all", end_step=10, epochs=1, steps_per_epoch=10, batch_size=64,
                         pretrained_lr_ratio=0.1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        pretrained = tf.compat.v1.get_variable("resnet/block1/w", initializer=1.0)
        new = tf.compat.v1.get_variable("resnet/logits/weights", initializer=1.0)
        loss = 3.0 * pretrained + 5.0 * new
        pairs = list(zip(tf.gradients(loss, [pretrained, new]), [pretrained, new]))
        scaled = scaled_for_pretrained(stage)(pairs)
        assert session.run([gradient for gradient, _ in scaled]) == pytest.approx([0.3, 5.0])
    assert scaled_for_pretrained(None) is None
    assert scaled_for_pretrained(dataclasses.replace(stage, pretrained_lr_ratio=1.0)) is None
