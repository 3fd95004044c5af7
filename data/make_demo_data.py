"""Rebuilds data/images/, the embedded demo data set, from Fashion-MNIST.

    apt-get install dataset-fashion-mnist      # IDX files, no download at run time
    python data/make_demo_data.py [--per_class 100] [--output data/images]

Takes the first --per_class images of each class from the Fashion-MNIST test
set (Xiao et al., arXiv 1708.07747) and writes them as 28x28 grayscale PNGs,
one folder per class. The committed data/images/ was made with the defaults.
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
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "images"))
    args = parser.parse_args()
    images_path = os.path.join(SOURCE_DIR, "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(images_path):
        sys.exit(f"error: {images_path} not found: run 'apt-get install dataset-fashion-mnist'")
    images = read_idx(images_path)
    labels = read_idx(os.path.join(SOURCE_DIR, "t10k-labels-idx1-ubyte.gz"))
    for label, name in enumerate(CLASS_NAMES):
        folder = os.path.join(args.output, name)
        os.makedirs(folder, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:args.per_class]):
            Image.fromarray(images[index]).save(
                os.path.join(folder, f"{index:05d}.png"), optimize=True)
    print(f"wrote {args.per_class} images for each of {len(CLASS_NAMES)} classes to {args.output}")


if __name__ == "__main__":
    main()
