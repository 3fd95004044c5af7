"""Precision (hardware.choose_precision): the choice on every kind of machine,
from faked CPU and GPU features; bf16 training graphs that train with float32
variables; prediction in bf16 giving fp32's answers; the fp32 Classifier's
memory (its weights in variables, not frozen)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim
from PIL import Image

import cpu_gradients
import hardware
import modeldir
import resnet
import train
import useModel
from cli import UserError
from conftest import COLOURS, REPO, make_colour_images

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
    precision = hardware.choose_precision("auto", features)
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
    precision = hardware.choose_precision("auto", features, purpose="prediction")
    assert (precision.name, precision.device) == (name, device)


@pytest.mark.parametrize("requested,features,message", [
    ("bf16", cpu(EPYC_AVX2), "no AVX-512"),
    ("bf16", {"cpu_flags": XEON_AMX, "gpus": [(7, 0)]}, "no bfloat16 arithmetic"),
    ("fp8", cpu(XEON_AMX), "choose one of"),
])
def test_a_precision_the_machine_cannot_compute_is_a_user_error(requested, features, message):
    with pytest.raises(UserError, match=message):
        hardware.choose_precision(requested, features)


def test_requested_precisions_say_so():
    assert str(hardware.choose_precision("fp32", cpu(XEON_AMX))).startswith(
        "precision fp32: as requested")
    assert hardware.choose_precision("bf16", cpu(EPYC_AVX512), purpose="prediction").name == "bf16"
    emulated = hardware.choose_precision("bf16", cpu(SKYLAKE))
    assert emulated.name == "bf16" and "emulates" in emulated.reason
    assert hardware.choose_precision("fp16", cpu(EPYC_AVX2)).loss_scaling


def test_how_each_precision_is_computed():
    # bf16 on a CPU: a float32 graph that the session rewrites; on a GPU and
    # for fp16: a graph built in that type; only fp16 scales the loss.
    on_cpu = hardware.Precision("bf16", "CPU", "")
    on_gpu = hardware.Precision("bf16", "GPU", "")
    fp16 = hardware.Precision("fp16", "GPU", "")
    fp32 = hardware.Precision("fp32", "CPU", "")
    assert [p.graph_dtype for p in (on_cpu, on_gpu, fp16, fp32)] == [
        tf.float32, tf.bfloat16, tf.float16, tf.float32]
    assert [p.rewrite_bf16 for p in (on_cpu, on_gpu, fp16, fp32)] == [True, False, False, False]
    assert [p.loss_scaling for p in (on_cpu, on_gpu, fp16, fp32)] == [False, False, True, False]
    on = hardware.session_config(False, on_cpu).graph_options.rewrite_options
    off = hardware.session_config(False, fp32).graph_options.rewrite_options
    assert on.auto_mixed_precision_onednn_bfloat16 == on.ON
    assert off.auto_mixed_precision_onednn_bfloat16 != on.ON


def test_mixed_precision_is_fp16_and_conflicts_are_refused(capsys):
    assert train.parse_args(["--mixed_precision"]).precision == "fp16"
    assert train.parse_args([]).precision == "auto"
    with pytest.raises(SystemExit):
        train.parse_args(["--mixed_precision", "--precision", "bf16"])
    assert "--mixed_precision means --precision fp16" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# bfloat16 on this machine: it needs AVX-512 (TensorFlow's oneDNN) or a GPU
# ---------------------------------------------------------------------------
CAN_BF16 = "avx512f" in hardware.cpu_flags() or bool(hardware.gpu_compute_capabilities())
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
    precision = hardware.Precision("bf16", device, "test")
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        global_step = tf.compat.v1.train.get_or_create_global_step()
        with cpu_gradients.faster_weight_gradients(precision):
            logits = resnet.build(images, "layer_14", len(COLOURS), is_train=True,
                                  compute_dtype=precision.graph_dtype)
        loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
        train_op = slim.learning.create_train_op(
            loss, tf.compat.v1.train.MomentumOptimizer(0.02, 0.9), global_step=global_step)
        assert all(v.dtype.base_dtype == tf.float32 for v in tf.compat.v1.global_variables()
                   if v.dtype.base_dtype.is_floating)  # (the global step is an int64)
        assert logits.dtype == tf.float32
        with tf.compat.v1.Session(config=hardware.session_config(False, precision)) as session:
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


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Nine new colour images (three per class), not seen in training."""
    root = make_colour_images(str(tmp_path_factory.mktemp("parity")), per_class=3, seed=7)
    return sorted(os.path.join(root, c, f) for c in COLOURS for f in os.listdir(
        os.path.join(root, c)))


def top1(results):
    return [r["predictions"][0]["label"] for r in results]


@pytest.mark.slow
@needs_bf16
def test_bf16_prediction_gives_fp32s_answers(trained_model, images, tmp_path):
    answers = {}
    for name in ("fp32", "bf16"):
        classifier = useModel.Classifier(trained_model, precision=name)
        assert classifier.precision.name == name
        answers[name] = classifier.predict(images, top_k=3)
        classifier.close()
    assert top1(answers["bf16"]) == top1(answers["fp32"])
    assert sum(label == os.path.basename(os.path.dirname(path))
               for label, path in zip(top1(answers["fp32"]), images)) >= len(images) - 1
    for low, full in zip(answers["bf16"], answers["fp32"]):
        assert abs(low["predictions"][0]["probability"]
                   - full["predictions"][0]["probability"]) < 0.05
    # A SavedModel exported in bf16 answers the same too.
    path, _ = useModel.export_saved_model(trained_model, str(tmp_path / "serving"),
                                          precision="bf16")
    serving = tf.saved_model.load(path).signatures["serving_default"]
    encoded = []
    for image in images:
        with open(image, "rb") as f:
            encoded.append(f.read())
    classes = serving(image_bytes=tf.constant(encoded))["classes"].numpy()[:, 0]
    assert [c.decode() for c in classes] == top1(answers["fp32"])


# Run in a process of its own: the Classifier's peak memory over what the
# process held once TensorFlow was imported, in MB ("skip" where the peak
# cannot be reset).
_PEAK_OF_A_CLASSIFIER = """
import sys
import cli
cli.configure_environment()
import useModel

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
except OSError:
    sys.exit(print("skip"))
start = status("VmRSS")
classifier = useModel.Classifier(sys.argv[1], precision=sys.argv[3])
assert "predictions" in classifier.predict([sys.argv[2]])[0]
print(status("VmHWM") - start)
"""


@pytest.mark.slow  # a process of its own
def test_classifier_holds_its_weights_about_once(tmp_path):
    """useModel.Classifier in fp32 keeps its weights in variables. Frozen into
    constants, TensorFlow held them many times over: this layer_14 (about 20
    MB of weights) took 330 MB to load and classify one image, 60 MB with
    variables; ResNet-50 at 224 px peaked at 1.9 GB instead of 0.7. Restoring
    takes about twice the weights while the checkpoint is read; the bound
    leaves room for that, the graph and one image's work."""
    model_dir = str(tmp_path / "model")
    labels = [f"class_{i}" for i in range(10)]
    manifest = {"model": "layer_14", "num_classes": 10, "image_size": 32, "stem": "small",
                "preprocessing": {}}
    modeldir.write_manifest(model_dir, manifest, labels)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        modeldir.build_network(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]),
                               dict(manifest, labels=labels), is_train=False)
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt-0"),
                                        write_meta_graph=False)
    weights_mb = sum(os.path.getsize(os.path.join(model_dir, name)) for name in
                     os.listdir(model_dir) if ".data-" in name) / 2**20
    image = str(tmp_path / "red.jpg")
    Image.new("RGB", (40, 40), COLOURS["red"]).save(image)
    result = subprocess.run([sys.executable, "-c", _PEAK_OF_A_CLASSIFIER, model_dir, image,
                             "fp32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout.strip() == "skip":
        pytest.skip("cannot reset the peak-memory counter here")
    growth = float(result.stdout)
    assert 15 < weights_mb < 30  # what the bound was set for
    assert growth < 4 * weights_mb + 40, f"{growth:.0f} MB for {weights_mb:.0f} MB of weights"
