"""TensorFlow's environment, set in one named function before TensorFlow loads.

Each script starts with

    from suite.plumbing import environment
    if __name__ == "__main__":
        environment.configure(verbose="--verbose" in sys.argv)

before anything imports TensorFlow, so the environment is set here, not as a
side effect of which module happens to be imported first.
"""
import contextlib
import importlib.util
import logging
import os
import sys


# oneDNN's cache of compiled kernels, in kernels (its default: 1024). A
# training run's kernels (forward, backward, validation) seem to overflow
# 1024: with it, one or two early validations of each run took 24-67 s
# instead of 4-8, with 8192 none did (BENCHMARKS.md, "Time to accuracy").
ONEDNN_PRIMITIVE_CACHE = 8192


def configure(verbose=False):
    """Sets TensorFlow's environment and loads it; call before importing it.

    TF_ENABLE_ONEDNN_OPTS=1: oneDNN is off by default on AMD CPUs with AVX2
    only, and without it backprop through convs on small feature maps is
    pathologically slow (6.7x at 32 px on such a CPU).
    ONEDNN_PRIMITIVE_CACHE_CAPACITY: see ONEDNN_PRIMITIVE_CACHE.
    Unless verbose, TensorFlow loads with its C++ log lines silenced: without
    a GPU every run would otherwise start with "Could not find cuda drivers",
    "oneDNN custom operations are on" and an "E0000 ... failed call to cuInit"
    line that looks like an error and is not one. Those lines are written
    while TensorFlow loads and probes for devices, before any of its log
    settings apply, so both happen here with stderr pointed at /dev/null; the
    scripts' own messages come later. A setting the user made in the
    environment wins. TensorFlow and TF-slim load without the libraries
    they would load and we never use (_unused_libraries_skipped).
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE))
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    silenced = contextlib.nullcontext() if verbose else _stderr_silenced()
    with silenced, _unused_libraries_skipped():
        import tensorflow as tf
        import tf_slim  # noqa: F401
        if not verbose:
            tf.config.list_physical_devices("GPU")  # the CUDA probe logs here
    if not verbose:
        # TensorFlow's Python logger: deprecation notices of the TF1 APIs we
        # use, and errors the scripts catch and report in their own words.
        tf.get_logger().setLevel("CRITICAL")


@contextlib.contextmanager
def _unused_libraries_skipped():
    """Loading TensorFlow imports Keras 3's optimizers eagerly (unless
    TF_USE_LEGACY_KERAS asks for tf_keras instead), and Keras and TF-slim's
    metric-learning loss import scikit-learn wherever it is installed
    (cleanlab brings it, for Evaluation.py --audit). The scripts use none of
    them, and they were a third of each script's start (BENCHMARKS.md,
    "Start-up"). Inside this context TensorFlow is told to use
    tf_keras where that is not installed, so its eager import fails quietly
    (tf.keras is then unusable in this process: nothing here uses it), and
    scikit-learn counts as absent; both are as before once it ends, for
    cleanlab and for child processes."""
    skip_keras = ("TF_USE_LEGACY_KERAS" not in os.environ
                  and importlib.util.find_spec("tf_keras") is None)
    skip_sklearn = "sklearn" not in sys.modules
    if skip_keras:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if skip_sklearn:
        sys.modules["sklearn"] = None  # an import of it raises ImportError
    try:
        yield
    finally:
        if skip_keras:
            del os.environ["TF_USE_LEGACY_KERAS"]
        if skip_sklearn and sys.modules.get("sklearn", "") is None:
            del sys.modules["sklearn"]


@contextlib.contextmanager
def _stderr_silenced():
    """Points file descriptor 2 (C++ code writes there) at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_tf1_notices():
    """Freezing and exporting use TF1 APIs on purpose (convert_variables_to_constants,
    the SavedModel Builder): their deprecation notices would bury the lines
    that matter."""
    import tensorflow as tf
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))  # never louder than configure() made it
    try:
        yield
    finally:
        logger.setLevel(level)
