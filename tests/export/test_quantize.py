"""suite/export/quantize.py: int8 and fp16 exports that run in ONNX Runtime
(through the unchanged client) and LiteRT, agree with the fp32 model, and
are smaller; calibration on the model's own training records."""
import glob
import json
import os

import numpy as np
import onnx
import pytest
import tensorflow as tf

import onnx_predict
from helpers import JPEG_IMAGES, run_script
from suite.data.contract import FEATURES
from suite.export import onnx_model, quantize, tflite_model
from suite.images.eval_transform import eval_pixels
from suite.model.manifest import load_manifest
from suite.plumbing.errors import UserError


def colour_pixels(colour_data, sample_images, size):
    """Every colour image and the sample JPEGs as the pixel models' input, and their colours."""
    image_dir, _ = colour_data
    jpeg_folder, _ = sample_images
    paths = sorted(glob.glob(os.path.join(image_dir, "*", "*.png"))) + [
        os.path.join(jpeg_folder, name) for name, _, _ in JPEG_IMAGES]
    colours = [os.path.basename(os.path.dirname(p)) for p in paths[:-len(JPEG_IMAGES)]] + [
        colour for _, colour, _ in JPEG_IMAGES]
    return np.stack([onnx_predict.image_pixels(p, size) for p in paths]), colours


def litert_probabilities(path, pixels):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.float32  # float pixels in, as the fp32 export
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), interpreter


@pytest.mark.slow
def test_int8_exports_agree_with_fp32_in_a_quarter_of_the_size(exported, trained_model,
                                                               colour_data, sample_images,
                                                               tmp_path):
    """useModel.py --quantize int8: ONNX (ONNX Runtime, the client unchanged)
    and TFLite (LiteRT) give fp32's top-1 wherever fp32 is sure, are right
    as often, and take under 40% of its size."""
    onnx_path, tflite_path = tmp_path / "int8.onnx", tmp_path / "int8.tflite"
    result = run_script("useModel.py", "--model_dir", trained_model, "--export_onnx", onnx_path,
                        "--export_tflite", tflite_path, "--quantize", "int8", "--json")
    assert json.loads(result.stdout)["exported"]["quantize"] == "int8"
    manifest = load_manifest(trained_model)
    pixels, colours = colour_pixels(colour_data, sample_images, manifest["image_size"])
    fp32 = onnx_predict.OnnxClassifier(exported["onnx"]).probabilities(pixels)

    client = onnx_predict.OnnxClassifier(str(onnx_path))
    assert client.precision == "int8" and client.labels == manifest["labels"]
    metadata = client._session.get_modelmeta().custom_metadata_map
    trained_on = json.load(open(os.path.join(colour_data[1], "dataset.json")))
    assert json.loads(metadata["quantization"])["calibration_images"] == \
        trained_on["num_examples"]["train"]  # all of them: fewer than 300
    ops = {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    litert, interpreter = litert_probabilities(str(tflite_path), pixels)
    assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())
    for probabilities, path, fp32_path in ((client.probabilities(pixels), onnx_path,
                                            exported["onnx"]),
                                           (litert, tflite_path, exported["tflite"])):
        # Where fp32 is sure, the same class; as often right as fp32, within 2 points.
        sure = fp32.max(1) > 0.6
        assert (probabilities.argmax(1) == fp32.argmax(1))[sure].all(), path
        right = [np.mean(np.array(manifest["labels"])[p.argmax(1)] == colours)
                 for p in (probabilities, fp32)]
        assert right[0] >= right[1] - 0.02, (path, right)
        assert np.abs(probabilities - fp32).mean() < 0.02, path
        assert os.path.getsize(path) < 0.4 * os.path.getsize(fp32_path), path


@pytest.mark.slow
def test_fp16_exports_are_half_the_size_and_agree(exported, trained_model, colour_data,
                                                  sample_images, tmp_path):
    manifest = load_manifest(trained_model)
    pixels, _ = colour_pixels(colour_data, sample_images, manifest["image_size"])
    fp32 = onnx_predict.OnnxClassifier(exported["onnx"]).probabilities(pixels)
    onnx_path = onnx_model.export_onnx(trained_model, str(tmp_path / "m.onnx"),
                                       quantize="fp16")[0]
    tflite_path = tflite_model.export_tflite(trained_model, str(tmp_path / "m.tflite"),
                                             quantize="fp16")[0]
    client = onnx_predict.OnnxClassifier(onnx_path)
    assert client.precision == "fp16"
    for probabilities, path, fp32_path in (
            (client.probabilities(pixels), onnx_path, exported["onnx"]),
            (litert_probabilities(tflite_path, pixels)[0], tflite_path, exported["tflite"])):
        np.testing.assert_allclose(probabilities, fp32, atol=1e-2)
        assert os.path.getsize(path) < 0.55 * os.path.getsize(fp32_path), path
    with open(tflite_path, "rb") as f:
        entry = tflite_model.metadata_entries(f.read())["quantization"]
    assert json.loads(entry)["precision"] == "fp16"


def test_calibration_reads_the_model_s_training_records(small_data):
    """Spread over the shards, as eval_pixels makes the client's input; a
    model's records gone or of other classes is one line naming the fix."""
    data_dir = small_data
    info = json.load(open(os.path.join(data_dir, "dataset.json")))
    manifest = {"labels": info["classes"], "image_size": 24, "data": {"dir": data_dir}}
    pixels = quantize.calibration_pixels(manifest, count=4)
    firsts = []
    for shard in sorted(glob.glob(os.path.join(data_dir, "train-*"))):  # two shards
        for record in tf.data.TFRecordDataset(shard).take(2):
            encoded = tf.io.parse_single_example(record, FEATURES)["image/encoded"].numpy()
            firsts.append(eval_pixels(encoded, 24))
    assert pixels.shape == (4, 24, 24, 3) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, np.stack(firsts))
    everything = quantize.calibration_pixels(manifest)
    assert len(everything) == info["num_examples"]["train"]  # fewer than 300: all
    with pytest.raises(UserError, match="give --data_dir"):
        quantize.calibration_pixels(dict(manifest, data={"dir": data_dir + "-moved"}))
    with pytest.raises(UserError, match="give the records the model was trained on"):
        quantize.calibration_pixels(dict(manifest, labels=["cat", "dog"]))


def test_quantize_flags_are_checked_in_one_line(tmp_path, capsys):
    import useModel
    for args, words in ((["--quantize", "int8", "a.jpg"], "applies to --export_tflite"),
                        (["--export_onnx", "a.onnx", "--data_dir", "records"],
                         "--data_dir is what --quantize int8 calibrates on"),
                        (["--export_onnx", "a.onnx", "--quantize", "int4"], "invalid choice")):
        with pytest.raises(SystemExit) as stop:
            useModel.parse_args(args)
        assert stop.value.code == 2
        error = capsys.readouterr().err
        assert len(error.splitlines()) == 1 and words in error, error
    args = useModel.parse_args(["--export_onnx", "a.onnx", "--quantize", "int8",
                                "--data_dir", "records"])
    assert (args.quantize, args.data_dir) == ("int8", "records")
