"""Test-time views beyond the mirror image: the top-1 of a trained small-image
model when its predictions average the image, its mirror image, zoomed
crops and shifted zoomed crops (each with its mirror), on a split of
FlowIO.py's records.

    python bench/eval_views.py --model_dir MODELS --data_dir RECORDS [--split validation]

Prints the top-1 of each view alone and of the sets of views a default
could average (the mean of their class probabilities, as --flip_average
does for two), with the passes each costs. The model's own averaging is
switched off, so every view is one pass of the network. Choose on the
validation split; the official test file only reports.
"""
import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from suite.plumbing.environment import configure  # noqa: E402

configure()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from suite.data.pipeline import make_dataset  # noqa: E402
from suite.model.checkpoints import restore_chosen  # noqa: E402
from suite.model.manifest import load_manifest  # noqa: E402
from suite.model.network import build_network  # noqa: E402

ZOOMS = (0.9, 0.8)     # the crop's share of the side, resized back to the image size
SHIFT = 0.05           # a shifted crop moves by this share of the side
DIRECTIONS = {"": (0, 0), "n": (-SHIFT, 0), "s": (SHIFT, 0), "w": (0, -SHIFT),
              "e": (0, SHIFT)}


def views():
    """{name: crop box (y0, x0, y1, x1) in shares of the image, None for the whole}."""
    boxes = {"whole": None}
    for side, (direction, (dy, dx)) in itertools.product(ZOOMS, DIRECTIONS.items()):
        y0, x0 = (1 - side) / 2 + dy, (1 - side) / 2 + dx
        boxes[f"zoom{side}{direction}"] = [y0, x0, y0 + side, x0 + side]
    return boxes


def view_probabilities(model_dir, data_dir, split, boxes):
    """[2 * len(boxes), images, classes]: each view then its mirror; and the labels."""
    manifest = dict(load_manifest(model_dir), flip_average=False)
    size = manifest["image_size"]
    with tf.Graph().as_default():
        dataset = make_dataset(data_dir, split, size, 500, training=False,
                               preprocessing=manifest["preprocessing"])
        images, labels, _ = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        count = tf.shape(images)[0]
        batch = []
        for box in boxes.values():
            view = images if box is None else tf.image.crop_and_resize(
                images, tf.tile([box], [count, 1]), tf.range(count), [size, size])
            batch += [view, tf.reverse(view, axis=[2])]
        logits = build_network(tf.concat(batch, 0), manifest, is_train=False)
        probabilities = tf.reshape(tf.nn.softmax(logits), [len(batch), count, -1])
        with tf.compat.v1.Session() as session:
            print("checkpoint:", restore_chosen(session, model_dir, "best"))
            chunks, truth = [], []
            while True:
                try:
                    chunk, label = session.run([probabilities, labels])
                except tf.errors.OutOfRangeError:
                    break
                chunks.append(chunk)
                truth.append(label)
    return np.concatenate(chunks, axis=1), np.concatenate(truth)


def view_sets(boxes):
    """The sets of views a default could average, each with its mirrors."""
    sets = {"whole": ["whole"]}
    for side in ZOOMS:
        shifted = [f"zoom{side}{direction}" for direction in DIRECTIONS]
        sets[f"whole + zoom {side}"] = ["whole", f"zoom{side}"]
        sets[f"whole + zoom {side} x5 (centre and 4 shifts)"] = ["whole"] + shifted
        sets[f"zoom {side} x5 alone"] = shifted
    sets["all"] = list(boxes)
    return sets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    boxes = views()
    probabilities, truth = view_probabilities(args.model_dir, args.data_dir, args.split, boxes)
    rows = {name: (2 * i, 2 * i + 1) for i, name in enumerate(boxes)}

    def top1(passes):
        mean = probabilities[list(passes)].mean(axis=0)
        return (mean.argmax(1) == truth).mean()

    print(f"{args.split}: {len(truth)} images\n| views | passes | top-1 |\n|---|---:|---:|")
    for name, (plain, mirrored) in rows.items():
        print(f"| {name} | 1 | {top1([plain]):.4f} |\n| {name}, mirrored | 1 | "
              f"{top1([mirrored]):.4f} |")
    for label, names in view_sets(boxes).items():
        passes = [row for name in names for row in rows[name]]
        print(f"| {label}, each with its mirror | {len(passes)} | {top1(passes):.4f} |")


if __name__ == "__main__":
    main()
