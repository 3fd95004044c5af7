"""Rebuilds data/images/, the embedded demo data set, from Fashion-MNIST.

    apt-get install dataset-fashion-mnist      # IDX files, no download at run time
    python data/make_demo_data.py [--per_class 100] [--output data/images]
    python data/make_demo_data.py --split train --per_class 0 --output /tmp/fmnist/train
    python data/make_demo_data.py --split test --per_class 0 --output /tmp/fmnist/test

Takes the first --per_class images of each class (0: all of them) from the
Fashion-MNIST test or training file (Xiao et al., arXiv 1708.07747) and writes
them as 28x28 grayscale PNGs, one folder per class. The committed data/images/
was made with the defaults; the full files as folders are the accuracy
benchmark of BENCHMARKS.md (bench/fashion_mnist.sh).
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image

SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
# Fashion-MNIST's label order (its README); "/" in "T-shirt/top" cannot be a folder name.
CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path):
    """An IDX file (magic, dimensions, then uint8 data) as a numpy array."""
    with gzip.open(path, "rb") as f:
        _, _, dtype, ndim = struct.unpack(">BBBB", f.read(4))
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="which Fashion-MNIST file (default: %(default)s)")
    parser.add_argument("--per_class", type=int, default=100,
                        help="images per class, 0 for all (default: %(default)s)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "images"))
    args = parser.parse_args()
    prefix = {"test": "t10k", "train": "train"}[args.split]
    images_path = os.path.join(SOURCE_DIR, f"{prefix}-images-idx3-ubyte.gz")
    if not os.path.exists(images_path):
        sys.exit(f"error: {images_path} not found: run 'apt-get install dataset-fashion-mnist'")
    images = read_idx(images_path)
    labels = read_idx(os.path.join(SOURCE_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    per_class = args.per_class or len(labels)
    for label, name in enumerate(CLASS_NAMES):
        folder = os.path.join(args.output, name)
        os.makedirs(folder, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(
                os.path.join(folder, f"{index:05d}.png"), optimize=True)
    print(f"wrote {min(per_class, len(labels) // len(CLASS_NAMES))} images for each of {len(CLASS_NAMES)} classes to {args.output}")


if __name__ == "__main__":
    main()
