"""How much memory the machine has, and how much a training step needs."""
import os


def physical_memory_bytes():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_memory_bytes(num_blocks, image_size, batch_size):
    """A rough peak memory of one CPU training step: what the activations kept
    for backprop take per input pixel grows with the number of bottleneck
    blocks. Fitted to the peak RSS of bench/train_speed.py at 224 px, batch 32
    (layer_50, 16 blocks: 3.7 GB; layer_152, 50 blocks: 7.2 GB), plus the
    process itself (0.6 GB). Good to a factor of about 1.5: enough to refuse
    a step that cannot fit, not to plan one that barely does."""
    bytes_per_pixel = 65 * num_blocks + 860
    return batch_size * image_size ** 2 * bytes_per_pixel + 600e6
