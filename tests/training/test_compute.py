"""suite.training.compute: the forward pass's float operations from the real
graph, and the images and compute each stage adds."""
import pytest

import resnet

from suite.training import compute
from suite.training.stages import Stage


def documented_multiply_adds(model, size, num_classes):
    """The multiply-adds resnet.py's docstring describes for the small stem:
    a 3x3 conv to 64 channels at full size, then per block 1x1 (depth/4),
    3x3 (depth/4) and 1x1 (depth), the last block of stages 1-3 striding
    its 3x3 and last 1x1 (2, SAME padding), and 1x1 logits."""
    total, depth_in, side = size * size * 9 * 3 * resnet.STEM_DEPTH, resnet.STEM_DEPTH, size
    stages = resnet.ResNet_demo[model]
    for index, stage in enumerate(stages):
        depth, bottleneck = stage["depth"], stage["depth"] // 4
        for block in range(stage["num_blocks"]):
            strided = block == stage["num_blocks"] - 1 and index < len(stages) - 1
            out_side = -(-side // 2) if strided else side
            total += (side * side * depth_in * bottleneck
                      + out_side * out_side * 9 * bottleneck * bottleneck
                      + out_side * out_side * bottleneck * depth)
            depth_in, side = depth, out_side
    return total + depth_in * num_classes


@pytest.mark.parametrize("model, image_size", [("layer_14", 32), ("layer_14_half", 28),
                                               ("layer_50", 28)])
def test_forward_flops_count_each_multiply_add_twice(model, image_size):
    flops = compute.forward_flops(model, image_size, 10, stem="small")
    assert flops == 2 * documented_multiply_adds(model, image_size, 10)


def test_halving_the_depths_quarters_the_compute():
    full = compute.forward_flops("layer_14", 32, 10, stem="small")
    half = compute.forward_flops("layer_14_half", 32, 10, stem="small")
    assert 3.5 < full / half < 4.1  # the stem's conv keeps its 64 channels


def test_layer_50_is_near_the_published_figure():
    # He et al. (arXiv 1512.03385, table 1): 3.8e9 multiply-adds at 224 px
    # (the paper's FLOPs); the strides sit where TF-slim puts them.
    flops = compute.forward_flops("layer_50", 224, 1000, shortcut="B")
    assert 0.9 * 3.8e9 < flops / 2 < 1.1 * 3.8e9


def test_images_and_compute_by_stage():
    head = Stage("head", end_step=10, epochs=5, steps_per_epoch=2, batch_size=100, views=3)
    network = Stage("all", end_step=30, epochs=4, steps_per_epoch=5, batch_size=8)
    stages = (head, network)
    # Halfway through the network stage, two replicas of 8 images a step
    assert compute.stage_images(stages, 20, replicas=2) == [(head, 2000), (network, 160)]
    # The head's features: one forward pass over each view of each of the
    # 50 training images; the network's steps: three passes an image.
    assert compute.training_flops(compute.stage_images(stages, 20, replicas=2), forward=1e9,
                                  num_train=50) == 50 * 3 * 1e9 + 3 * 1e9 * 160
    assert compute.training_flops(compute.stage_images(stages, 0, replicas=2), forward=1e9,
                                  num_train=50) == 0


def test_the_record_and_its_line():
    record = compute.record(flops=2.5e15, images=120_000, seconds=600)
    assert record == {"pflop": 2.5, "images": 120_000, "minutes": 10.0,
                      "images_per_second": 200.0}
    assert compute.describe(record) == ("2.5 PFLOP of training compute: 120,000 images in "
                                        "10.0 minutes, 200 images/s")
