"""The numeric precision that is fastest on the machine at hand, what its CPU
and GPUs can do, and the session settings that go with it (used by train.py,
Evaluation.py, useModel.py and bench/).

    precision = choose_precision("auto")   # or "fp32", "bf16", "fp16"
    print(precision)          # "precision bf16: CPU has AMX (amx_bf16); ..."
    config = session_config(xla=False, precision=precision)
    choose_precision("auto", purpose="prediction")  # Evaluation.py, useModel.py

choose_precision() is the one place the decision is made. It reads the
features it decides on (/proc/cpuinfo's flags, the GPUs' compute capability)
at run time, or takes them as an argument, which is how the tests try every
kind of machine on any one.
"""
import collections

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from suite.plumbing.errors import UserError
from suite.plumbing.flags import PRECISIONS

DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}

# What bf16 measured against fp32 on each kind of CPU (BENCHMARKS.md,
# "Precision"): training steps of train.py's graph, the
# precisions taking turns. The reasons auto prints quote them.
MEASURED_AMX = "bf16 trained ResNet-50 1.76x as fast as fp32 on such a CPU"
MEASURED_AVX512_BF16 = ("bf16 trained 1.15x as fast as fp32 for the demo (layer_14, 32 px) "
                        "and 1.8x for ResNet-50 (224 px) on such a CPU")
MEASURED_AVX512_EMULATED = ("oneDNN emulates bf16 there: 0.4-0.7x as fast as fp32 "
                            "(measured with oneDNN limited to AVX-512 without BF16)")
# Prediction must keep fp32's answers (top-1 on the demo's 200 validation
# images, Evaluation.py): fp16 kept all of them, bf16 changed one (a near tie,
# 0.333 against the runner-up) for the model trained in bf16.
PREDICTION_BF16 = ("prediction keeps fp32's answers: bf16 changed 1 of the demo's 200 "
                   "(--precision bf16 predicted 1.5-1.7x as fast at batch 32-64 on an "
                   "avx512_bf16 CPU)")
PREDICTION_FP16 = "fp16 kept every answer of fp32 on the demo (computed on a CPU)"


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags as the kernel lists them (avx2, avx512f,
    avx512_bf16, amx_bf16, ...); empty where there is no such file (not Linux),
    which makes auto choose fp32."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def gpu_compute_capabilities():
    """(major, minor) of each GPU TensorFlow sees, e.g. [(8, 0)] for an A100."""
    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability",
                                                                     (0, 0)))
            for gpu in tf.config.list_physical_devices("GPU")]


def machine_features():
    """What choose_precision decides on, read from this machine."""
    return {"cpu_flags": cpu_flags(), "gpus": gpu_compute_capabilities()}


class Precision(collections.namedtuple("Precision", "name device reason")):
    """A chosen precision: name ("fp32", "bf16", "fp16"), the device it is for
    ("CPU" or "GPU") and why, as printed."""
    __slots__ = ()

    def __str__(self):
        return f"precision {self.name}: {self.reason}"

    @property
    def graph_dtype(self):
        """The dtype the network's layers are built in (variables, batch-norm
        statistics, the loss and the softmax stay float32 whatever it is).

        bf16 on a CPU keeps a float32 graph: oneDNN's grappler pass rewrites
        it to bfloat16 in the session (rewrite_bf16), which measured faster
        than building it in bfloat16 (it leaves the loss terms in float32, and
        cpu_gradients' weight gradients stay in place).
        """
        if self.rewrite_bf16:
            return tf.float32
        return DTYPES[self.name]

    @property
    def rewrite_bf16(self):
        """Whether the session converts the float32 graph to bfloat16 (oneDNN)."""
        return self.name == "bf16" and self.device == "CPU"

    @property
    def loss_scaling(self):
        """float16's 5 exponent bits flush small gradients to zero unless the
        loss is scaled; bfloat16 has float32's range and needs no scaling."""
        return self.name == "fp16"


def choose_precision(requested="auto", features=None, purpose="training"):
    """The Precision to compute in: `requested` ("auto", "fp32", "bf16",
    "fp16") on the machine described by `features` ({"cpu_flags": set of
    /proc/cpuinfo flags, "gpus": [(major, minor), ...]}; default: this one),
    for `purpose` "training" (train.py) or "prediction" (Evaluation.py,
    useModel.py).

    auto for training: on a GPU, bf16 from compute capability 8.0 (bfloat16
    tensor cores), fp16 on 7.x (float16 tensor cores; training scales the
    loss), else fp32. On a CPU, bf16 where it has bfloat16 instructions --
    AMX (amx_bf16) or AVX-512 BF16 (avx512_bf16), both measured faster than
    fp32 -- and fp32 elsewhere: AVX2 has no bfloat16 arithmetic, and
    TensorFlow's oneDNN computes bfloat16 on AVX-512 without it only by
    emulation.

    auto for prediction: the fastest precision that keeps fp32's answers.
    bf16 does not (PREDICTION_BF16): fp32 on CPUs, fp16 on GPUs with tensor
    cores (7.0 and up), fp32 on older GPUs.

    A precision the machine cannot compute raises UserError.
    """
    if requested not in PRECISIONS:
        raise UserError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    if purpose not in ("training", "prediction"):
        raise ValueError(f"purpose must be 'training' or 'prediction', got {purpose!r}")
    if features is None:
        features = machine_features()
    gpus = list(features.get("gpus") or ())
    if gpus:
        return _gpu_precision(requested, min(gpus), purpose)  # the weakest GPU decides
    return _cpu_precision(requested, frozenset(features.get("cpu_flags") or ()), purpose)


def _gpu_precision(requested, capability, purpose):
    cc = "GPU compute capability {}.{}".format(*capability)
    if requested == "auto" and purpose == "prediction":
        if capability >= (7, 0):
            return Precision("fp16", "GPU", f"{cc} has float16 tensor cores; "
                                            f"{PREDICTION_FP16}, bf16 changed 1 of 200")
        return Precision("fp32", "GPU", f"{cc} has no tensor cores")
    if requested == "auto":
        if capability >= (8, 0):
            return Precision("bf16", "GPU", f"{cc} has bfloat16 tensor cores")
        if capability >= (7, 0):
            return Precision("fp16", "GPU", f"{cc} has float16 tensor cores (bfloat16 "
                                            f"needs 8.0); training scales the loss")
        return Precision("fp32", "GPU", f"{cc} has no tensor cores")
    if requested == "bf16" and capability < (8, 0):
        raise UserError(f"--precision bf16: the {cc} has no bfloat16 arithmetic (it needs "
                        f"8.0, e.g. an A100); use --precision fp16 or auto")
    return Precision(requested, "GPU", f"as requested ({cc})")


def _cpu_precision(requested, flags, purpose):
    if "amx_bf16" in flags:
        has = "CPU has AMX (amx_bf16)"
        measured = MEASURED_AMX
    elif "avx512_bf16" in flags:
        has = "CPU has avx512_bf16 but no AMX"
        measured = MEASURED_AVX512_BF16
    elif "avx512f" in flags:
        has = "CPU has AVX-512 but no bfloat16 instructions"
        measured = MEASURED_AVX512_EMULATED
    else:
        has = "CPU has no AVX-512 and no bfloat16 instructions"
        measured = None
    bf16_fast = "amx_bf16" in flags or "avx512_bf16" in flags
    if requested == "auto" and purpose == "prediction":
        return Precision("fp32", "CPU", PREDICTION_BF16 if bf16_fast else has)
    if requested == "auto":
        if bf16_fast:
            return Precision("bf16", "CPU", f"{has}; {measured}")
        return Precision("fp32", "CPU", has + (f" ({measured})" if measured else ""))
    if requested == "bf16" and "avx512f" not in flags:
        # TensorFlow's oneDNN skips its bfloat16 rewrite without AVX-512
        # (IsBF16SupportedByOneDNNOnThisCPU): the run would be fp32 unannounced.
        raise UserError("--precision bf16: this CPU has no AVX-512, which TensorFlow needs "
                        "to compute in bfloat16 on a CPU; use --precision fp32 or auto")
    if requested == "bf16":
        return Precision("bf16", "CPU", f"as requested; {has}"
                         + ("" if bf16_fast else f" ({measured})"))
    if requested == "fp16":
        return Precision("fp16", "CPU", "as requested; a CPU has no float16 arithmetic, "
                                        "so it is slow (fp16 is for GPUs with tensor cores)")
    return Precision("fp32", "CPU", f"as requested ({has})")


def session_config(xla, precision=None):
    """The session's settings.

    allow_soft_placement lets ops without a GPU kernel fall back to the CPU;
    allow_growth shares a GPU instead of taking all its memory; xla compiles
    the graph with XLA (it helps on GPUs); a CPU bf16 precision turns on
    oneDNN's bfloat16 rewrite (auto_mixed_precision_onednn_bfloat16): convs,
    matrix products, batch norm and the element-wise ops between them in
    bfloat16, variables, batch-norm statistics, the loss and the softmax in
    float32.
    """
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if xla:
        config.graph_options.optimizer_options.global_jit_level = (
            tf.compat.v1.OptimizerOptions.ON_1)
    if precision is not None and precision.rewrite_bf16:
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON)
    return config
