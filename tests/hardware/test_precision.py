"""suite/hardware/precision.py: what auto chooses on every kind of machine
(from faked CPU and GPU features), for training and for prediction, and the
precisions a machine cannot compute refused in one line."""
import pytest
import tensorflow as tf

from suite.hardware import precision as hardware_precision
from suite.plumbing.errors import UserError


XEON_AMX = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}


EPYC_AVX512 = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"}  # Zen 4


EPYC_AVX2 = {"avx2", "fma"}


SKYLAKE = {"avx2", "fma", "avx512f", "avx512_vnni"}  # AVX-512 without bfloat16


def cpu(flags):
    return {"cpu_flags": frozenset(flags), "gpus": []}


@pytest.mark.parametrize("features,name,device,why", [
    (cpu(XEON_AMX), "bf16", "CPU", "CPU has AMX"),
    (cpu(EPYC_AVX512), "bf16", "CPU", "CPU has avx512_bf16 but no AMX; bf16 trained"),
    (cpu(EPYC_AVX2), "fp32", "CPU", "no AVX-512 and no bfloat16 instructions"),
    (cpu(SKYLAKE), "fp32", "CPU", "emulates bf16"),
    (cpu(()), "fp32", "CPU", "no AVX-512"),                  # no /proc/cpuinfo
    ({"cpu_flags": XEON_AMX, "gpus": [(9, 0)]}, "bf16", "GPU", "capability 9.0 has bfloat16"),
    ({"cpu_flags": EPYC_AVX2, "gpus": [(7, 0)]}, "fp16", "GPU", "7.0 has float16 tensor cores"),
    ({"cpu_flags": XEON_AMX, "gpus": [(6, 1)]}, "fp32", "GPU", "6.1 has no tensor cores"),
    ({"cpu_flags": XEON_AMX, "gpus": [(8, 0), (7, 5)]}, "fp16", "GPU", "7.5"),  # the weakest
])
def test_auto_chooses_what_is_fastest_on_the_machine(features, name, device, why):
    precision = hardware_precision.choose_precision("auto", features)
    assert (precision.name, precision.device) == (name, device)
    assert str(precision).startswith(f"precision {name}: ") and why in str(precision)


@pytest.mark.parametrize("features,name,device", [
    (cpu(XEON_AMX), "fp32", "CPU"),
    (cpu(EPYC_AVX512), "fp32", "CPU"),
    (cpu(EPYC_AVX2), "fp32", "CPU"),
    ({"cpu_flags": EPYC_AVX2, "gpus": [(9, 0)]}, "fp16", "GPU"),
    ({"cpu_flags": EPYC_AVX2, "gpus": [(7, 0)]}, "fp16", "GPU"),
    ({"cpu_flags": EPYC_AVX2, "gpus": [(6, 1)]}, "fp32", "GPU"),
])
def test_auto_predicts_in_the_fastest_precision_that_keeps_the_answers(features, name, device):
    # bf16 changed one of the demo's 200 answers; fp16 none (BENCHMARKS.md).
    precision = hardware_precision.choose_precision("auto", features, purpose="prediction")
    assert (precision.name, precision.device) == (name, device)


@pytest.mark.parametrize("requested,features,message", [
    ("bf16", cpu(EPYC_AVX2), "no AVX-512"),
    ("bf16", {"cpu_flags": XEON_AMX, "gpus": [(7, 0)]}, "no bfloat16 arithmetic"),
    ("fp8", cpu(XEON_AMX), "choose one of"),
])
def test_a_precision_the_machine_cannot_compute_is_a_user_error(requested, features, message):
    with pytest.raises(UserError, match=message):
        hardware_precision.choose_precision(requested, features)


def test_requested_precisions_say_so():
    assert str(hardware_precision.choose_precision("fp32", cpu(XEON_AMX))).startswith(
        "precision fp32: as requested")
    assert hardware_precision.choose_precision("bf16", cpu(EPYC_AVX512),
                                               purpose="prediction").name == "bf16"
    emulated = hardware_precision.choose_precision("bf16", cpu(SKYLAKE))
    assert emulated.name == "bf16" and "emulates" in emulated.reason
    assert hardware_precision.choose_precision("fp16", cpu(EPYC_AVX2)).loss_scaling


def test_how_each_precision_is_computed():
    # bf16 on a CPU: a float32 graph that the session rewrites; on a GPU and
    # for fp16: a graph built in that type; only fp16 scales the loss.
    on_cpu = hardware_precision.Precision("bf16", "CPU", "")
    on_gpu = hardware_precision.Precision("bf16", "GPU", "")
    fp16 = hardware_precision.Precision("fp16", "GPU", "")
    fp32 = hardware_precision.Precision("fp32", "CPU", "")
    assert [p.graph_dtype for p in (on_cpu, on_gpu, fp16, fp32)] == [
        tf.float32, tf.bfloat16, tf.float16, tf.float32]
    assert [p.rewrite_bf16 for p in (on_cpu, on_gpu, fp16, fp32)] == [True, False, False, False]
    assert [p.loss_scaling for p in (on_cpu, on_gpu, fp16, fp32)] == [False, False, True, False]
    on = hardware_precision.session_config(False, on_cpu).graph_options.rewrite_options
    off = hardware_precision.session_config(False, fp32).graph_options.rewrite_options
    assert on.auto_mixed_precision_onednn_bfloat16 == on.ON
    assert off.auto_mixed_precision_onednn_bfloat16 != on.ON
