"""resnet.py: shapes, layer and parameter counts, the shortcut, batch norm."""
import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

import resnet


def build(model, size=224, num_output=1000, is_train=False, batch=None, stem_kind="imagenet"):
    images = tf.compat.v1.placeholder(tf.float32, [batch, size, size, 3])
    end_points = {}
    with slim.arg_scope(resnet.resnet_arg_scope()):
        logits = resnet.inference(images, resnet.ResNet_demo[model], num_output, is_train,
                                  end_points=end_points, stem_kind=stem_kind)
    return images, logits, end_points


def hand_counted_parameters(stages, num_output):
    """Trainable parameters counted from the design, independently of the code:
    convs have no bias (batch norm follows) but 2 batch-norm parameters per
    channel; the logits conv has a bias and no batch norm."""
    total = 7 * 7 * 3 * 64 + 2 * 64
    depth_in = 64
    for stage in stages:
        for _ in range(stage["num_blocks"]):
            d, m = stage["depth"], stage["depth"] // 4
            total += depth_in * m + 2 * m      # 1x1 reduce
            total += 3 * 3 * m * m + 2 * m     # 3x3
            total += m * d + 2 * d             # 1x1 restore
            depth_in = d
    total += 2 * depth_in                      # final batch norm
    return total + depth_in * num_output + num_output


@pytest.mark.parametrize("model,layers", [("layer_14", 14), ("layer_14_half", 14),
                                          ("layer_50", 50), ("layer_101", 101),
                                          ("layer_152", 152)])
def test_weight_layers_and_parameters(model, layers):
    with tf.Graph().as_default():
        _, logits, _ = build(model)
        weights = [v for v in tf.compat.v1.trainable_variables() if v.op.name.endswith("weights")]
        parameters = sum(v.shape.num_elements() for v in tf.compat.v1.trainable_variables())
    assert len(weights) == layers
    assert parameters == hand_counted_parameters(resnet.ResNet_demo[model], 1000)
    assert logits.shape.as_list() == [None, 1000]


def test_stage_shapes_at_224():
    # Stride on the last block of stages 1-3, as slim's resnet_v1: 56 -> 28 -> 14 -> 7 -> 7.
    with tf.Graph().as_default():
        _, logits, end_points = build("layer_50", batch=2)
        shapes = {name: t.shape.as_list() for name, t in end_points.items()}
    assert shapes == {"stem": [2, 56, 56, 64], "block1": [2, 28, 28, 256],
                      "block2": [2, 14, 14, 512], "block3": [2, 7, 7, 1024],
                      "block4": [2, 7, 7, 2048], "pool": [2, 1, 1, 2048]}
    assert logits.shape.as_list() == [2, 1000]


def test_the_small_stem_keeps_the_full_size_for_the_first_block():
    # 3x3/1 conv and no pool: a 28-px image enters block 1 at 28x28, not 7x7.
    with tf.Graph().as_default():
        _, _, small = build("layer_14", size=28, batch=2, num_output=10, stem_kind="small")
        stem_weights = [v.shape.as_list() for v in tf.compat.v1.trainable_variables()
                        if v.op.name == "resnet/conv1/weights"]
    with tf.Graph().as_default():
        _, _, imagenet = build("layer_14", size=28, batch=2, num_output=10)
    assert small["stem"].shape.as_list() == [2, 28, 28, 64]
    assert small["block4"].shape.as_list() == [2, 4, 4, 2048]
    assert imagenet["stem"].shape.as_list() == [2, 7, 7, 64]
    assert stem_weights == [[3, 3, 3, 64]]


def test_block_strides_follow_the_seed():
    assert resnet.block_strides(resnet.ResNet_demo["layer_50"]) == [
        [1, 1, 2], [1, 1, 1, 2], [1, 1, 1, 1, 1, 2], [1, 1, 1]]
    assert resnet.block_strides(resnet.ResNet_demo["layer_14"]) == [[2], [2], [2], [1]]


def test_depth_filling_pads_zeros_around_the_channels():
    x = np.arange(2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2) + 1
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        padded = session.run(resnet.depthFilling(tf.constant(x), 5))  # odd difference: 3
        same = session.run(resnet.depthFilling(tf.constant(x), 2))
    assert padded.shape == (1, 2, 2, 5)
    np.testing.assert_array_equal(padded[..., 0], 0)       # (5 - 2) // 2 = 1 before
    np.testing.assert_array_equal(padded[..., 1:3], x)
    np.testing.assert_array_equal(padded[..., 3:], 0)      # the other 2 after
    np.testing.assert_array_equal(same, x)
    with pytest.raises(ValueError):
        resnet.depthFilling(tf.constant(x), 1)


def test_sampling_takes_every_other_pixel():
    x = np.arange(5 * 5, dtype=np.float32).reshape(1, 5, 5, 1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        sampled = session.run(resnet.sampling(tf.constant(x), stride=2))
        unchanged = session.run(resnet.sampling(tf.constant(x), stride=1))
    np.testing.assert_array_equal(sampled[0, :, :, 0], x[0, ::2, ::2, 0])
    np.testing.assert_array_equal(unchanged, x)


def test_bottleneck_shortcut_is_the_padded_sampled_input():
    # With the residual branch's last batch norm scaled to zero, a block's output
    # is relu(shortcut): the input sampled at stride 2 and zero-padded 4 -> 8.
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 4)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        with slim.arg_scope(resnet.resnet_arg_scope()):
            out = resnet.bottleneck(tf.constant(x), 8, stride=2, is_train=False)
        session.run(tf.compat.v1.global_variables_initializer())
        gamma = [v for v in tf.compat.v1.global_variables() if "conv3/BatchNorm/gamma" in v.name][0]
        session.run(gamma.assign(tf.zeros_like(gamma)))
        result = session.run(out)
    expected = np.maximum(np.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (2, 2)]), 0)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_unknown_batch_size_and_finite_forward_pass():
    with tf.Graph().as_default():
        images, logits, _ = build("layer_14", size=64, num_output=7)
        assert logits.shape.as_list() == [None, 7]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for batch in (1, 3):
                x = np.random.default_rng(batch).normal(size=(batch, 64, 64, 3))
                out = session.run(logits, {images: x})
                assert out.shape == (batch, 7)
                assert np.isfinite(out).all()


def test_batch_norm_moving_statistics_update_in_training_and_serve_inference():
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 2.0, size=(64, 3, 3, 4)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 3, 3, 4])
        with tf.compat.v1.variable_scope("bn"):
            trained = resnet.batch_norm(x, is_training=True)
        with tf.compat.v1.variable_scope("bn", reuse=True):
            inferred = resnet.batch_norm(x, is_training=False)
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        assert len(updates) == 2
        session.run(tf.compat.v1.global_variables_initializer())
        mean_var, variance_var = [v for v in tf.compat.v1.global_variables()
                                  if "moving" in v.name]
        # Before any update, inference uses the initial statistics (0, 1).
        np.testing.assert_allclose(session.run(inferred, {x: data}), data / np.sqrt(1 + 1e-5),
                                   rtol=1e-5)
        # Training normalises with the batch statistics...
        out = session.run(trained, {x: data})
        np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-4)
        # ...and the updates move the moving statistics towards them.
        for _ in range(600):
            session.run(updates, {x: data})
        moving_mean, moving_variance = session.run([mean_var, variance_var])
        np.testing.assert_allclose(moving_mean, data.mean(axis=(0, 1, 2)), rtol=1e-2)
        n = data.shape[0] * 9
        np.testing.assert_allclose(moving_variance, data.var(axis=(0, 1, 2)) * n / (n - 1),
                                   rtol=1e-2)
        # Inference now uses exactly those moving statistics.
        expected = (data - moving_mean) / np.sqrt(moving_variance + resnet.BATCH_NORM_EPSILON)
        np.testing.assert_allclose(session.run(inferred, {x: data}), expected, rtol=1e-4,
                                   atol=1e-4)


def test_layer_14_half_is_layer_14_at_half_the_depths():
    half, full = resnet.ResNet_demo["layer_14_half"], resnet.ResNet_demo["layer_14"]
    assert [stage["depth"] * 2 for stage in half] == [stage["depth"] for stage in full]
    assert [stage["num_blocks"] for stage in half] == [stage["num_blocks"] for stage in full]


@pytest.mark.parametrize("shortcut,projections", [("A", 0), ("B", 4), ("C", 16)])
def test_shortcut_options_add_projections_where_the_paper_says(shortcut, projections):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 64, 64, 3])
        logits = resnet.build(images, "layer_50", 10, is_train=False, shortcut=shortcut)
        found = [v for v in tf.compat.v1.trainable_variables()
                 if v.op.name.endswith("shortcut/weights")]
    assert len(found) == projections and logits.shape.as_list() == [None, 10]


def test_frozen_stages_keep_their_batch_norm_in_inference_mode():
    """Fine-tuning's last_stage: only block 4 and the post-norm update their
    batch-norm statistics; the stem and blocks 1-3 keep theirs."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        resnet.build(images, "layer_14", 3, is_train=True, frozen_stages=3)
        updated = {op.name.split("/")[1]
                   for op in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)}
    assert updated == {"block4", "postnorm"}
