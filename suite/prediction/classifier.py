"""Classifying images with a trained model directory, loaded once:
useModel.py's Python API.

    from useModel import Classifier        # or: from suite.prediction.classifier import ...
    classifier = Classifier("models")
    for result in classifier.predict(["a.jpg", "b.png"], top_k=3):
        print(result["path"], result["predictions"][0])  # {"label": ..., "probability": ...}

A back-end passes what it holds instead of paths: the bytes of an upload, a
file object, a PIL image or a numpy array (suite.images.inputs.encode_image).
"""
import tensorflow as tf

from suite.hardware.precision import choose_precision, session_config
from suite.images.decoding import BadImage
from suite.images.inputs import describe_image_input, encode_image, is_one_image, is_path
from suite.model.checkpoints import describe_checkpoint, restore_chosen
from suite.model.manifest import load_manifest
from suite.model.network import frozen_network, import_network, network_probabilities
from suite.plumbing.errors import UserError
from suite.prediction.results import rank
from suite.preprocessing.evaluation import preprocess_batch, preprocess_for_eval


class Classifier:
    """A trained model loaded once: predict() classifies lists of images.

    checkpoint: None (best/'s when there is one, else the newest), "best",
    "latest" or a prefix; checkpoint_description says which and why, and
    self.checkpoint is the one loaded."""

    def __init__(self, model_dir="models", checkpoint=None, batch_size=32, precision="auto"):
        self.manifest = load_manifest(model_dir)
        self.labels = self.manifest["labels"]
        self.batch_size = batch_size
        # (A clear error if there is none.)
        self.checkpoint_description = describe_checkpoint(model_dir, checkpoint)
        # "auto" is the fastest this machine has that keeps the answers
        # (BENCHMARKS.md, "Precision").
        self.precision = choose_precision(precision, purpose="prediction")
        self._graph = tf.Graph()
        with self._graph.as_default():
            # The input is encoded JPEG bytes, as FlowIO stores them; the graph
            # runs the evaluation preprocessing, so prediction = evaluation.
            self._encoded = tf.compat.v1.placeholder(tf.string, [None], name="encoded_images")
            size, preprocessing = self.manifest["image_size"], self.manifest["preprocessing"]
            images = preprocess_batch(
                self._encoded, lambda e: preprocess_for_eval(e, size, preprocessing), size)
            self.checkpoint = self._load_network(images, model_dir, checkpoint)

    def _load_network(self, images, model_dir, checkpoint):
        """The network on images, its weights loaded; returns the checkpoint.

        The weights stay variables, restored from the checkpoint: a service
        keeps a third of the memory of frozen constants for a little speed
        on single images (suite.model.network.frozen_network says both).
        Except in bf16 on a CPU, where the constants also convert the float32
        weights once instead of at every run; without them bf16 was slower
        than fp32 for single images (1.6x frozen bf16's time)."""
        frozen = self.precision.rewrite_bf16
        if frozen:
            network, checkpoint = frozen_network(self.manifest, model_dir, checkpoint,
                                                 self.precision.graph_dtype)
            self._probabilities = tf.nn.softmax(import_network(network, images))
        else:
            self._probabilities = network_probabilities(images, self.manifest,
                                                        self.precision.graph_dtype)
        self._session = tf.compat.v1.Session(
            graph=self._graph, config=session_config(False, self.precision))
        if frozen:
            return checkpoint
        return restore_chosen(self._session, model_dir, checkpoint)

    def probabilities(self, encoded_images):
        """[len(encoded_images), num_classes] for JPEG bytes from encode_image."""
        return self._session.run(self._probabilities, {self._encoded: encoded_images})

    def predict(self, images, top_k=3, threshold=None):
        """One dict per image, in order: {"path" (for a path) or "input" (what
        else it was: "item 2: 5,120 bytes"), "predictions": [{"label",
        "probability"}], "label"} or {"path" or "input", "error"}. "label" is
        the best class, or "unknown" when its probability is below threshold.

        images: a list whose items are paths, encoded image bytes (an upload),
        binary file objects, PIL images or HxWx3 uint8 RGB numpy arrays, mixed
        as you like (suite.images.inputs.encode_image says what each is taken
        to mean); each is seen as FlowIO stores its file. An item that is not a
        usable image gets its own "error"; the others are still answered."""
        images = _as_list(images)
        results = [{"path": item} if is_path(item)
                   else {"input": f"item {index}: {describe_image_input(item)}"}
                   for index, item in enumerate(images)]
        max_side = self.manifest["preprocessing"].get("max_side")
        for start in range(0, len(images), self.batch_size):
            batch, encoded = [], []
            for item, result in zip(images[start:start + self.batch_size],
                                    results[start:start + self.batch_size]):
                try:  # BadImage is all that one item can raise (suite.images.decoding)
                    encoded.append(encode_image(item, max_side)[0])
                    batch.append(result)
                except BadImage as error:
                    result["error"] = str(error)
            if not encoded:
                continue
            for result, row in zip(batch, self._rows(batch, encoded)):
                if row is not None:  # None: TensorFlow refused it (its error is set)
                    result.update(rank(row, self.labels, top_k, threshold))
        return results

    def _rows(self, batch, encoded):
        """Probabilities per image; an image TensorFlow's decoder refuses
        although Pillow read it gets an "error" and row None, and the rest
        of its batch is still classified."""
        try:
            return self.probabilities(encoded)
        except tf.errors.InvalidArgumentError:
            rows = []
            for result, data in zip(batch, encoded):
                try:
                    rows.append(self.probabilities([data])[0])
                except tf.errors.InvalidArgumentError as error:
                    result["error"] = ("TensorFlow cannot decode it: "
                                       + error.message.splitlines()[0])
                    rows.append(None)
            return rows

    def close(self):
        self._session.close()


def _as_list(images):
    """predict's images as a list; one image passed on its own is refused,
    not taken apart (a path into characters, bytes into numbers, an array
    into rows). A 4-D array is a batch of HxWx3 images."""
    if is_one_image(images):
        raise UserError(f"Classifier.predict takes a list of images, and was given one "
                        f"({describe_image_input(images)}): pass [image]")
    try:
        return list(images)
    except TypeError:
        raise UserError(f"Classifier.predict takes a list of images, and was given "
                        f"{describe_image_input(images)}")
