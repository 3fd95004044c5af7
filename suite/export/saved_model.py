"""A SavedModel for TensorFlow Serving: encoded image bytes in, every class
with its probability out (useModel.py --export)."""
import os
import shutil
import tempfile

import tensorflow as tf

from suite.export.serving_input import serving_preprocess
from suite.hardware.precision import DTYPES
from suite.model.checkpoints import resolve_checkpoint, restore_chosen
from suite.model.manifest import load_manifest
from suite.model.network import network_probabilities
from suite.plumbing.environment import quiet_tf1_notices
from suite.plumbing.errors import UserError, reason
from suite.preprocessing.evaluation import preprocess_batch

SERVING_INPUT = "image_bytes"  # "_bytes": what Google Cloud's JSON API expects of binary inputs


def _next_version(export_dir):
    """TensorFlow Serving loads the highest integer sub-folder: one above it."""
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(model_dir, export_dir, checkpoint=None, precision="fp32"):
    """Writes a SavedModel of the checkpoint to export_dir/<next version>;
    returns (its path, the checkpoint).

    precision "fp32" (the default) runs on any server. "bf16" or "fp16" build
    the layers in that type (variables stay float32, read through casts), for
    a server with the matching hardware: the graph is fixed in the SavedModel,
    so the serving machine cannot choose as Classifier does."""
    manifest = load_manifest(model_dir)
    resolve_checkpoint(model_dir, checkpoint)  # a clear error if there is none
    try:
        os.makedirs(export_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".export-", dir=export_dir)
    except OSError as error:
        raise UserError(f"--export {export_dir}: cannot write there ({reason(error)})")
    try:
        return _export_saved_model(manifest, model_dir, checkpoint, staging, export_dir,
                                   precision)
    except (OSError, tf.errors.OpError) as error:
        raise UserError(f"--export {export_dir}: cannot write there ({reason(error)}); "
                        f"nothing was exported: free some space or choose another folder")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_saved_model(manifest, model_dir, checkpoint, staging, export_dir, precision):
    """export_saved_model's work: built in staging, then moved in."""
    size, preprocessing = manifest["image_size"], manifest["preprocessing"]
    graph = tf.Graph()
    with quiet_tf1_notices(), graph.as_default(), \
            tf.compat.v1.Session(graph=graph) as session:
        encoded = tf.compat.v1.placeholder(tf.string, [None], name=SERVING_INPUT)
        images = preprocess_batch(encoded, lambda e: serving_preprocess(e, size, preprocessing),
                                  size)
        probabilities = network_probabilities(images, manifest, DTYPES[precision])
        # Every class, best first: clients slice [:, :k] for a top-k.
        top = tf.math.top_k(probabilities, k=len(manifest["labels"]))
        names = tf.gather(tf.constant(manifest["labels"]), top.indices)
        # Only the variables of the graph built above are read from the
        # checkpoint; nothing of a stored graph is imported.
        checkpoint = restore_chosen(session, model_dir, checkpoint)
        signature = tf.compat.v1.saved_model.predict_signature_def(
            inputs={SERVING_INPUT: encoded},
            outputs={"classes": names, "probabilities": top.values,
                     "class_ids": top.indices})
        # Written to a hidden folder, then renamed: TensorFlow Serving polls
        # export_dir and must never load a half-written version.
        builder = tf.compat.v1.saved_model.Builder(os.path.join(staging, "model"))
        builder.add_meta_graph_and_variables(
            session, [tf.saved_model.SERVING],
            signature_def_map={
                tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature},
            strip_default_attrs=True)  # loadable by older TensorFlow Serving builds
        builder.save()
    while True:
        target = os.path.join(export_dir, str(_next_version(export_dir)))
        try:
            os.rename(os.path.join(staging, "model"), target)
            break
        except OSError:  # another export took that number meanwhile
            if not os.path.exists(target):
                raise
    return target, checkpoint
