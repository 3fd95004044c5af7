"""Photo-like JPEGs in class folders, for the benchmarks (cached, deterministic).

    python bench/photos.py [--num_images 2000] [--num_classes 5] [--seed 0]

Real photos are what FlowIO.py and the input pipeline are for, but none ship
with the project. These stand in for them where it matters to speed: 800x600
pixels, baseline JPEG at quality 90, and 50-150 KB each like a camera photo
scaled down for training, because decoding time grows with both the pixel
count and the amount of entropy-coded data. Each image is smooth colour
gradients (a few random colours interpolated across the frame), soft blobs,
a mid-frequency texture and sensor-like noise; a flat or pure-noise image
would be far smaller or larger than a photo and decode at another speed.

The set is written once under /tmp/bench-photos/<num>-<classes>-<seed>/ (its
description beside it, in <num>-<classes>-<seed>.json, so the folder holds
nothing but class folders) and reused by bench/convert_speed.py and bench/input_speed.py; the same arguments
always give the same bytes.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = "/tmp/bench-photos"
WIDTH, HEIGHT = 800, 600
QUALITY = 90


def make_photo(rng):
    """One 800x600 RGB photo-like image from a numpy Generator."""
    # Gradients: a coarse grid of random colours, smoothly upsampled.
    grid = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3), dtype=np.uint8)
    base = Image.fromarray(grid).resize((WIDTH, HEIGHT), Image.BICUBIC)
    # Soft blobs: the "objects" of the scene.
    blobs = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(blobs)
    mask = Image.new("L", (WIDTH, HEIGHT))
    mask_draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(3, 9)):
        x, y = rng.integers(-100, WIDTH), rng.integers(-100, HEIGHT)
        w, h = rng.integers(60, 400), rng.integers(60, 400)
        box = [int(x), int(y), int(x + w), int(y + h)]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        mask_draw.ellipse(box, fill=int(rng.integers(120, 256)))
    mask = mask.filter(ImageFilter.GaussianBlur(int(rng.integers(2, 12))))
    image = np.asarray(Image.composite(blobs, base, mask), dtype=np.float32)
    # Texture (foliage, fabric, gravel): random detail at 1/4 and 1/2 scale.
    for factor, amplitude in ((4, rng.uniform(6, 16)), (2, rng.uniform(3, 8))):
        small = rng.standard_normal((HEIGHT // factor, WIDTH // factor, 3), dtype=np.float32)
        layer = Image.fromarray(np.clip(small * 40 + 128, 0, 255).astype(np.uint8))
        layer = layer.resize((WIDTH, HEIGHT), Image.BILINEAR)
        image += (np.asarray(layer, dtype=np.float32) - 128) * (amplitude / 40)
    # Sensor noise.
    image += rng.uniform(1.5, 3.5) * rng.standard_normal(image.shape, dtype=np.float32)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def photo_dir(num_images=2000, num_classes=5, seed=0):
    """The folder of the set (class_0 ... class_K-1), made on first use."""
    folder = os.path.join(ROOT, f"{num_images}-{num_classes}-{seed}")
    if os.path.exists(folder + ".json"):
        return folder
    # Written beside the final folder and renamed at the end, so a killed run
    # never leaves a half-made set that later runs would trust.
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    sizes = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        class_dir = os.path.join(partial, f"class_{index % num_classes}")
        os.makedirs(class_dir, exist_ok=True)
        path = os.path.join(class_dir, f"photo_{index:05d}.jpg")
        make_photo(rng).save(path, format="JPEG", quality=QUALITY)
        sizes.append(os.path.getsize(path))
        if (index + 1) % 250 == 0:
            print(f"photos: {index + 1}/{num_images}", file=sys.stderr, flush=True)
    with open(partial + ".json", "w") as f:
        json.dump({"num_images": num_images, "num_classes": num_classes, "seed": seed,
                   "size": [WIDTH, HEIGHT], "quality": QUALITY,
                   "bytes": {"min": min(sizes), "median": int(np.median(sizes)),
                             "max": max(sizes), "total": sum(sizes)}}, f, indent=1)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(partial, folder)
    os.rename(partial + ".json", folder + ".json")  # last: the set is complete
    return folder


def describe(folder):
    with open(folder + ".json") as f:
        info = json.load(f)
    b = info["bytes"]
    return (f"{info['num_images']} JPEGs {info['size'][0]}x{info['size'][1]} q{info['quality']} "
            f"in {info['num_classes']} classes, {b['min'] / 1e3:.0f}/{b['median'] / 1e3:.0f}/"
            f"{b['max'] / 1e3:.0f} KB min/median/max, {b['total'] / 1e6:.0f} MB: {folder}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(describe(photo_dir(args.num_images, args.num_classes, args.seed)))


if __name__ == "__main__":
    main()
