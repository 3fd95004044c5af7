"""The session settings for the machine at hand (used by train.py and bench/)."""
import tensorflow as tf


def session_config(xla):
    """The training session's settings.

    allow_soft_placement lets ops without a GPU kernel fall back to the CPU;
    allow_growth shares a GPU instead of taking all its memory; xla compiles
    the graph with XLA (it helps on GPUs).
    """
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if xla:
        config.graph_options.optimizer_options.global_jit_level = (
            tf.compat.v1.OptimizerOptions.ON_1)
    return config
