"""Grad-CAM heat maps (Selvaraju et al., "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", arXiv 1610.02391): where in
an image the evidence for a class lies, for useModel.py --explain.

    explainer = Explainer("models")
    pixels, maps, probabilities = explainer.explain(encoded_images, class_ids)
    atomic_write("cat.png", explanation_png(pixels[0], maps[0], "cat.jpg", title))

The map of class c is relu(sum_k w_k A_k), A the last stage's output (the
feature map right before the global pooling, resnet.inference's
end_points["block4"]) and w_k the spatial mean of d logit_c / d A_k;
resized (bilinear) to the network's input size and scaled to 0..1 per image,
it is drawn over the image as the evaluation transform gave it to the
network (suite.preprocessing.evaluation.eval_pixels), so the two align.
"""
import os

import numpy as np
import tensorflow as tf

import resnet
from suite.images.decoding import BadImage
from suite.images.inputs import encode_image
from suite.insight.figures import DPI, png_bytes, shorten
from suite.model.checkpoints import restore_chosen
from suite.model.manifest import load_manifest
from suite.plumbing.environment import quiet_tf1_notices
from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write
from suite.plumbing.names import display_name, some
from suite.preprocessing.evaluation import eval_pixels, preprocess_batch
from suite.preprocessing.normalization import normalize

HEAT_MAP_COLOURS = "jet"  # the paper's figures: blue (no evidence) to red
HEAT_MAP_OPACITY = 0.5


class Explainer:
    """A model directory's network, loaded once, with the Grad-CAM maps of
    any class on top.

    The plain eval-mode network in float32, whatever --precision and
    --flip_average say: a map belongs to one image as the network saw it
    (the mirror image of flip_average would blur two maps into one), and
    float32 gradients are the ones the paper's method assumes. Its weights
    are the checkpoint Classifier loads for the same `checkpoint`
    (restore_chosen: best/'s by default, moving averages when they
    validated better), kept as variables."""

    def __init__(self, model_dir="models", checkpoint=None, batch_size=32):
        self.manifest = load_manifest(model_dir)
        self.labels = self.manifest["labels"]
        self.batch_size = batch_size
        self._graph = tf.Graph()
        with self._graph.as_default(), quiet_tf1_notices():
            self._encoded = tf.compat.v1.placeholder(tf.string, [None], name="encoded_images")
            self._class_ids = tf.compat.v1.placeholder(tf.int32, [None], name="class_ids")
            self._build()
            self._session = tf.compat.v1.Session(graph=self._graph)
            self.checkpoint = restore_chosen(self._session, model_dir, checkpoint)

    def _build(self):
        """The graph: stored JPEG bytes -> the evaluation transform's pixels
        (kept, to draw: the heat map then lies exactly on what the network
        saw) -> normalised -> the network -> a map per image of its class."""
        manifest, size = self.manifest, self.manifest["image_size"]
        pixels = preprocess_batch(self._encoded, lambda e: eval_pixels(e, size), size)
        end_points = {}
        logits = resnet.build(normalize(pixels, manifest["preprocessing"]), manifest["model"],
                              len(self.labels), is_train=False,
                              shortcut=manifest.get("shortcut", "A"),
                              stem_kind=manifest.get("stem", "imagenet"), end_points=end_points)
        features = end_points[f"block{len(resnet.ResNet_demo[manifest['model']])}"]
        chosen = tf.one_hot(self._class_ids, len(self.labels))
        # Eval-mode batch norm treats each image on its own, so the gradient
        # of the batch's sum is each image's own gradient.
        gradients = tf.gradients(tf.reduce_sum(logits * chosen), features)[0]
        weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        self._maps = tf.image.resize(cam, [size, size], method="bilinear")[..., 0]
        self._pixels = tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)
        self._probabilities = tf.reduce_sum(tf.nn.softmax(logits) * chosen, axis=1)

    def explain(self, encoded_images, class_ids):
        """For JPEG bytes as encode_image gives them and one class index per
        image: (uint8 RGB pixels [N, size, size, 3] as the network saw them,
        float32 maps [N, size, size] in 0..1 (normalise_maps), the network's
        probability of each image's class [N])."""
        parts = []
        for start in range(0, len(encoded_images), self.batch_size):
            parts.append(self._session.run(
                (self._pixels, self._maps, self._probabilities),
                {self._encoded: encoded_images[start:start + self.batch_size],
                 self._class_ids: class_ids[start:start + self.batch_size]}))
        pixels, maps, probabilities = (np.concatenate(part) for part in zip(*parts))
        return pixels, normalise_maps(maps), probabilities

    def close(self):
        self._session.close()


def class_id(name, labels):
    """The index of class `name` in labels; a name the model does not have
    is one line naming a few it has (checked before anything is loaded)."""
    if name in labels:
        return labels.index(name)
    raise UserError(f"--explain_class {display_name(name)!r} is not a class of this model; "
                    f"its classes are {some(labels)} (labels.txt)")


def normalise_maps(maps):
    """Each map divided by its own maximum, so 1 is where the image's
    evidence is strongest and the colours compare within an image, not
    across images. A map that is zero everywhere (no positive evidence for
    the class anywhere) stays zero rather than dividing by zero."""
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)


def explanation_png(pixels, heat_map, name, title):
    """PNG bytes: the image as the network saw it beside the same image under
    its heat map (0..1, the image's size), as suite.insight.figures draws:
    matplotlib's object API on its Agg canvas, no display, no pyplot."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8, 4.4), dpi=DPI)
    original, explained = figure.subplots(1, 2)
    original.imshow(pixels, interpolation="nearest")
    original.set_title(shorten(name), fontsize=10)
    explained.imshow(pixels, interpolation="nearest")
    explained.imshow(heat_map, cmap=colormaps[HEAT_MAP_COLOURS], alpha=HEAT_MAP_OPACITY,
                     vmin=0.0, vmax=1.0, interpolation="bilinear")
    explained.set_title(title, fontsize=10)
    for axes in (original, explained):
        axes.set_axis_off()
    figure.tight_layout()
    return png_bytes(figure)


def output_path(out_dir, path, taken):
    """OUT_DIR/<image's base name>.png, made unique: with "-2", "-3", ... when
    another input of this run took the name or a file lies there already (a
    user's file is never overwritten). Adds the name to `taken`."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    candidate, number = os.path.join(out_dir, stem + ".png"), 1
    while candidate in taken or os.path.lexists(candidate):
        number += 1
        candidate = os.path.join(out_dir, f"{stem}-{number}.png")
    taken.add(candidate)
    return candidate


def write_explanations(explainer, results, out_dir, class_name=None):
    """One PNG in out_dir per classified path among Classifier.predict's
    results, of class_name or else the class the result ranked first (what
    useModel.py printed for it, from its own --precision and flip average);
    its title's p is the Explainer's float32 probability of that class. Each
    such result gets "explanation" (the PNG's path) and "explained_class";
    results with an "error" get none. Returns how many PNGs were written."""
    chosen = [r for r in results if "predictions" in r and "path" in r]
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"--explain {display_name(out_dir)}: cannot make the folder "
                        f"({error.strerror})")
    max_side = explainer.manifest["preprocessing"].get("max_side")
    taken, written = set(), 0
    for start in range(0, len(chosen), explainer.batch_size):
        batch, encoded = _read_again(chosen[start:start + explainer.batch_size], max_side)
        if not batch:
            continue
        names = [class_name or r["predictions"][0]["label"] for r in batch]
        pixels, maps, probabilities = explainer.explain(
            encoded, [class_id(n, explainer.labels) for n in names])
        for result, name, image, heat_map, p in zip(batch, names, pixels, maps, probabilities):
            path = output_path(out_dir, result["path"], taken)
            shown = display_name(os.path.basename(result["path"]))
            try:
                atomic_write(path, explanation_png(image, heat_map, shown,
                                                   f"Grad-CAM: {name} (p={p:.2f})"))
            except OSError as error:
                raise UserError(f"--explain: cannot write {display_name(path)} "
                                f"({error.strerror})")
            result.update(explanation=display_name(path), explained_class=name)
            written += 1
    return written


def _read_again(results, max_side):
    """(the results whose files still read, their JPEG bytes as Classifier
    took them). The file was read once to classify it; one that changed into
    no image meanwhile gets "explanation_error" and no PNG."""
    batch, encoded = [], []
    for result in results:
        try:
            encoded.append(encode_image(result["path"], max_side)[0])
            batch.append(result)
        except BadImage as error:
            result["explanation_error"] = str(error)
    return batch, encoded
