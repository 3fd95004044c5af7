"""Class-per-folder images -> TFRecords, and the one input pipeline that reads them.

    python FlowIO.py [--image_dir data/images] [--output_dir data/tfrecords]
                     [--validation_ratio 0.2] [--seed 0] [--validation_dir DIR]
                     [--max_side N] [--num_shards N] [--workers N]

Write side: every top-level sub-folder of --image_dir is a class (sorted names;
images in deeper folders belong to it). Each file is decoded by content with
Pillow and normalised to 8-bit RGB (EXIF orientation applied; CMYK, grayscale,
palette and 16-bit images converted; alpha composited on white; first frame of
an animation), then stored as JPEG. Files that cannot be used are skipped and
reported with their reason; nothing is dropped silently. Writes to
--output_dir: labels.txt ("index:name", UTF-8), train-*/validation-* TFRecord
shards, and dataset.json (classes, counts, skipped files, duplicates, options,
a fingerprint of the data).

Read side (used by train.py, Evaluation.py and useModel.py): `make_dataset`,
`preprocess_for_train` and `preprocess_for_eval`, with imagefile.py the one
definition of how an image becomes the network's input, and `read_labels` /
`write_labels`, the one definition of the label file.
"""
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import cli

if __name__ == "__main__":
    cli.configure_environment(verbose="--verbose" in sys.argv)  # before TensorFlow loads

import tensorflow as tf

from cli import UserError
from imagefile import JPEG_QUALITY, BadImage, encode_image_bytes

# ---------------------------------------------------------------------------
# Facts shared by the write and the read side
# ---------------------------------------------------------------------------
LABELS_FILE = "labels.txt"
DATASET_FILE = "dataset.json"
SPLITS = ("train", "validation")
# Input normalisation, in 0..255 units: ImageNet's per-channel mean and std.
MEAN_RGB = (123.68, 116.78, 103.94)
STD_RGB = (58.40, 57.12, 57.38)
# Evaluation resizes the shorter side to image_size / EVAL_CROP, then takes the
# central image_size square (the usual 87.5% centre crop).
EVAL_CROP = 0.875
# Training crops cover this fraction range of the image area, then flip.
TRAIN_CROP_AREA = (0.25, 1.0)

IGNORED_FILES = {"Thumbs.db", "desktop.ini"}


# ---------------------------------------------------------------------------
# Finding the images
# ---------------------------------------------------------------------------
def _is_hidden(name):
    return name.startswith(".") or name in IGNORED_FILES


def walk_files(folder):
    """Every non-hidden file under folder, sorted.

    Symlinked folders are followed, except into a folder already walked or an
    ancestor of `folder` (a symlink loop, or a link that would pull other
    classes into this one), so the walk always ends.
    """
    top = os.path.realpath(folder)
    seen_dirs = set()
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs or top.startswith(real + os.sep):
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        found.extend(os.path.join(root, f) for f in files if not _is_hidden(f))
    return sorted(found)


def find_images(image_dir):
    """{class name: [file paths]} for a class-per-folder tree, and the files
    outside any class folder (which cannot be labelled)."""
    classes, stray = {}, []
    for entry in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, entry)
        if _is_hidden(entry):
            continue
        if os.path.isdir(path):
            classes[entry] = walk_files(path)
        else:
            stray.append(path)
    return classes, stray


# ---------------------------------------------------------------------------
# Converting (runs in worker processes)
# ---------------------------------------------------------------------------
# This process's open staging file, per staging folder (see _stage).
_STAGING_FILES = {}


def _stage(staging_dir, encoded):
    """Appends encoded bytes to this process's staging file: (path, offset).

    Images wait on disk, not in memory, because the split needs every file's
    outcome first and a large set does not fit in memory. One append-only
    file per process rather than one file per image: creating a file and
    opening it again to write the shard cost about as much as checking a
    JPEG does.
    """
    key = (staging_dir, os.getpid())  # a forked worker inherits the dict
    staging = _STAGING_FILES.get(key)
    if staging is None:
        path = os.path.join(staging_dir, f"{os.getpid()}.bin")
        staging = _STAGING_FILES[key] = open(path, "ab")
    offset = staging.tell()
    staging.write(encoded)
    staging.flush()  # the main process reads it as soon as all images are back
    return staging.name, offset


def _close_staging(staging_dir):
    """Closes this process's staging files of staging_dir."""
    for key in [key for key in _STAGING_FILES if key[0] == staging_dir]:
        _STAGING_FILES.pop(key).close()


def _convert_one(task):
    """Reads, checks, normalises and stages one image; returns its record."""
    index, path, staging_dir, max_side = task
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        return {"index": index, "error": f"cannot read: {error.strerror or error}"}
    digest = hashlib.sha256(data).hexdigest()
    try:
        encoded, height, width = encode_image_bytes(data, max_side)
    except BadImage as error:
        return {"index": index, "error": str(error), "sha256": digest}
    staged, offset = _stage(staging_dir, encoded)
    return {"index": index, "sha256": digest, "height": height, "width": width,
            "bytes": len(encoded), "staged": staged, "offset": offset}


class _Progress:
    """One line on stderr: a live bar on a terminal, a few lines in a log."""

    def __init__(self, total, what):
        self.total, self.what, self.start = total, what, time.time()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def update(self, done):
        rate = done / max(time.time() - self.start, 1e-9)
        line = f"{self.what}: {done}/{self.total} ({rate:.0f}/s)"
        if self.tty:
            bar = "#" * int(30 * done / max(self.total, 1))
            print(f"\r[{bar:<30}] {line}", end="\n" if done == self.total else "",
                  file=sys.stderr, flush=True)
        elif done * 10 // max(self.total, 1) > self.last_decile:
            self.last_decile = done * 10 // max(self.total, 1)
            print(line, file=sys.stderr, flush=True)


def _convert_all(tasks, workers):
    """Runs _convert_one over tasks on `workers` processes, in order."""
    progress = _Progress(len(tasks), "converting")
    results = []
    if workers <= 1 or len(tasks) < 64:
        iterator = map(_convert_one, tasks)
        pool = None
    else:
        # fork: workers need only Pillow, and TensorFlow has run nothing yet.
        pool = multiprocessing.get_context("fork").Pool(workers)
        iterator = pool.imap(_convert_one, tasks, chunksize=8)
    try:
        for result in iterator:
            results.append(result)
            if len(results) % 25 == 0 or len(results) == len(tasks):
                progress.update(len(results))
    finally:
        if pool is not None:
            pool.terminate()
    return results


# ---------------------------------------------------------------------------
# Splitting and writing
# ---------------------------------------------------------------------------
def _split_class(items, ratio, rng):
    """Deterministic split of one class: (train, validation).

    Every class with at least 2 images gets at least 1 validation image (so
    each class is measured) and keeps at least 1 training image.
    """
    items = list(items)
    rng.shuffle(items)
    if ratio <= 0 or len(items) < 2:
        return items, []
    n_val = min(max(1, round(len(items) * ratio)), len(items) - 1)
    return items[n_val:], items[:n_val]


def _auto_num_shards(total_bytes, num_examples):
    """Shard count from TensorFlow's tf.data guidance: files of at least 10 MB,
    ideally ~100 MB, and several files per split so reads can interleave."""
    by_size = math.ceil(total_bytes / 100e6)
    for_parallel_reads = min(4, int(total_bytes // 10e6))
    return max(1, min(max(by_size, for_parallel_reads), num_examples))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _make_example(encoded, label, height, width, filename):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes_feature(encoded),
        "image/format": _bytes_feature(b"jpeg"),
        "image/class/label": _int64_feature(label),
        "image/height": _int64_feature(height),
        "image/width": _int64_feature(width),
        "image/filename": _bytes_feature(filename.encode("utf-8")),
    }))


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _write_shards(split, examples, num_shards, out_dir):
    """Writes examples round-robin into num_shards files; returns their names."""
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, name)) for name in names]
    staged = {}  # staging file path -> open file
    try:
        for i, example in enumerate(examples):
            if example["staged"] not in staged:
                staged[example["staged"]] = open(example["staged"], "rb")
            source = staged[example["staged"]]
            source.seek(example["offset"])
            encoded = source.read(example["bytes"])
            writers[i % num_shards].write(_make_example(
                encoded, example["label"], example["height"], example["width"],
                example["filename"]).SerializeToString())
    finally:
        for writer in writers:
            writer.close()
        for source in staged.values():
            source.close()
    return names


def _size_stats(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fingerprint(examples):
    """A hash of what the records hold: file, class, split and content."""
    digest = hashlib.sha256()
    for e in sorted(examples, key=lambda e: (e["split"], e["filename"])):
        digest.update(f"{e['split']}\t{e['filename']}\t{e['label']}\t{e['sha256']}\n".encode())
    return digest.hexdigest()


def _check_writable(output_dir):
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=output_dir, prefix=".flowio-probe-")
        probe.close()
    except OSError as error:
        raise UserError(f"cannot write to --output_dir {output_dir}: "
                        f"{error.strerror or error}; choose a writable folder")


def _replace_outputs(new_dir, output_dir, names):
    """Moves the finished files in, replacing the previous run's output.

    dataset.json goes first out and last in: readers need it, so a run killed
    while files are swapped leaves an output that asks to be rebuilt rather
    than a mix of old and new shards.
    """
    old_info = os.path.join(output_dir, DATASET_FILE)
    if os.path.exists(old_info):
        os.remove(old_info)
    for name in os.listdir(output_dir):
        if name == LABELS_FILE or (name.endswith(".tfrecord") and name.split("-")[0] in SPLITS):
            os.remove(os.path.join(output_dir, name))
    for name in names + [LABELS_FILE, DATASET_FILE]:
        os.replace(os.path.join(new_dir, name), os.path.join(output_dir, name))


def _remove_stale_temporaries(output_dir):
    """Temporary folders of runs that were killed before they finished."""
    for name in os.listdir(output_dir):
        if name.startswith(".flowio-tmp-"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def find_files(image_dir, validation_dir=None):
    """Step 1: every file of the tree(s): (files, skipped, class folders).

    files: one dict per file with "tree" ("train" for --image_dir,
    "validation" for --validation_dir), "class_name", "path" and "filename"
    (the path relative to its tree, stored in the record).
    """
    trees = [("train", image_dir)] + ([("validation", validation_dir)] if validation_dir else [])
    files, skipped, class_folders = [], [], []
    for tree, root in trees:
        classes, stray = find_images(root)
        if tree == "train":
            if not classes:
                raise UserError(f"--image_dir {root} has no class folders: put one "
                                f"sub-folder of images per class there")
            class_folders = list(classes)
        skipped.extend({"path": path, "reason": "not inside a class folder"} for path in stray)
        for class_name, paths in classes.items():
            files.extend({"tree": tree, "class_name": class_name, "path": p,
                          "filename": os.path.relpath(p, root)} for p in paths)
    if not files:
        raise UserError(f"--image_dir {image_dir} has no files in its class folders")
    return files, skipped, class_folders


def decode_all(files, staging_dir, max_side, workers):
    """Step 2: decodes, checks and stages every file in parallel; returns
    (usable images, skipped files). A usable image is its file's dict plus
    what _convert_one measured (sha256, height, width, bytes, staged, offset)."""
    os.makedirs(staging_dir)
    try:
        results = _convert_all([(i, f["path"], staging_dir, max_side)
                                for i, f in enumerate(files)], workers)
    finally:
        _close_staging(staging_dir)  # those of this process, when workers=1
    usable, skipped = [], []
    for file, result in zip(files, results):
        if "error" in result:
            skipped.append({"path": file["path"], "reason": result["error"]})
        else:
            usable.append(dict(result, **file))
    return usable, skipped


def deduplicate(images):
    """Step 3: one copy of each distinct image (by content).

    Returns (kept, duplicates, conflicts, skipped). A copy in the same class
    is a duplicate: the first is kept. The same image in two classes is a
    labelling error: training on it teaches noise, so no copy is kept until
    the user decides.
    """
    by_hash = {}
    for image in images:
        by_hash.setdefault(image["sha256"], []).append(image)
    kept, duplicates, conflicts, skipped = [], [], [], []
    for copies in by_hash.values():
        class_names = sorted({c["class_name"] for c in copies})
        if len(class_names) > 1:
            conflicts.append({"paths": [c["path"] for c in copies], "classes": class_names})
            skipped.extend({"path": c["path"], "reason": "the same image is in classes "
                            + ", ".join(class_names) + ": keep it in one"} for c in copies)
            continue
        kept.append(copies[0])
        for c in copies[1:]:
            duplicates.append({"path": c["path"], "duplicate_of": copies[0]["path"]})
            skipped.append({"path": c["path"], "reason": f"duplicate of {copies[0]['path']}"})
    return kept, duplicates, conflicts, skipped


def choose_classes(images, class_folders, image_dir, validation_dir=None):
    """Step 4: the classes are the --image_dir folders with at least one usable
    image, sorted by name (their index is the label). Returns (classes,
    empty class folders)."""
    classes = sorted({i["class_name"] for i in images if i["tree"] == "train"})
    extra = sorted({i["class_name"] for i in images if i["tree"] == "validation"} - set(classes))
    if extra:
        raise UserError(f"--validation_dir {validation_dir} has classes that --image_dir "
                        f"lacks: {', '.join(extra)}; use the same class folders in both")
    if len(classes) < 2:
        raise UserError(f"--image_dir {image_dir} has {len(classes)} class folder(s) "
                        f"with usable images; a classifier needs at least 2 "
                        f"(see dataset.json reasons in the report above)"
                        if classes else
                        f"--image_dir {image_dir} has no usable images in its class folders")
    return classes, sorted(set(class_folders) - set(classes))


def split_images(images, classes, validation_ratio, seed, separate_validation=False):
    """Step 5: {"train": [...], "validation": [...]}, each image given its
    "split" and "label".

    Each class is split on its own (stratified; deterministic for the seed),
    unless the validation images come from their own tree
    (separate_validation); then each split is shuffled so every shard mixes
    the classes.
    """
    rng = random.Random(seed)
    splits = {split: [] for split in SPLITS}
    for class_name in classes:
        own = [i for i in images if i["class_name"] == class_name and i["tree"] == "train"]
        if separate_validation:
            splits["train"].extend(own)
            splits["validation"].extend(i for i in images if i["class_name"] == class_name
                                        and i["tree"] == "validation")
        else:
            train, validation = _split_class(own, validation_ratio, rng)
            splits["train"].extend(train)
            splits["validation"].extend(validation)
    labels = {name: index for index, name in enumerate(classes)}
    for split, items in splits.items():
        rng.shuffle(items)
        for item in items:
            item["split"], item["label"] = split, labels[item["class_name"]]
    return splits


def write_splits(splits, num_shards, out_dir):
    """Step 6: the TFRecord shards of each split; returns {split: [names]}."""
    shards = {}
    for split, items in splits.items():
        if not items:
            shards[split] = []
            continue
        count = num_shards or _auto_num_shards(sum(i["bytes"] for i in items), len(items))
        shards[split] = _write_shards(split, items, min(count, len(items)), out_dir)
    return shards


def describe(classes, splits, shards, skipped, duplicates, conflicts, empty_classes, options):
    """Step 7: the dataset.json dict, the report of the run."""
    all_items = splits["train"] + splits["validation"]
    return {
        "classes": classes,
        "counts": {name: {split: sum(1 for i in splits[split] if i["class_name"] == name)
                          for split in SPLITS} for name in classes},
        "num_examples": {split: len(items) for split, items in splits.items()},
        "shards": shards,
        "skipped": skipped,
        "duplicates": duplicates,
        "label_conflicts": conflicts,
        "empty_classes": empty_classes,
        "image_size": {"height": _size_stats([i["height"] for i in all_items]),
                       "width": _size_stats([i["width"] for i in all_items])},
        "options": options,
        "fingerprint": _fingerprint(all_items),
    }


def convert(image_dir, output_dir, validation_ratio=0.2, seed=0, validation_dir=None,
            max_side=None, num_shards=None, workers=None):
    """Converts a class-per-folder tree; returns the dataset.json dict.

    Everything is written into a temporary folder inside output_dir and moved
    into place at the end, so an interrupted run leaves the previous output.
    """
    for name, folder in (("--image_dir", image_dir), ("--validation_dir", validation_dir)):
        if folder is not None and not os.path.isdir(folder):
            raise UserError(f"{name} {folder} is not a folder: put one sub-folder of "
                            f"images per class there")
    if not 0 <= validation_ratio < 1:
        raise UserError(f"--validation_ratio {validation_ratio} must be in [0, 1)")
    _check_writable(output_dir)
    _remove_stale_temporaries(output_dir)
    files, skipped, class_folders = find_files(image_dir, validation_dir)
    tmp_dir = tempfile.mkdtemp(prefix=".flowio-tmp-", dir=output_dir)
    try:
        images, unusable = decode_all(files, os.path.join(tmp_dir, "staging"), max_side,
                                      workers or os.cpu_count() or 1)
        images, duplicates, conflicts, repeated = deduplicate(images)
        skipped += unusable + repeated
        classes, empty_classes = choose_classes(images, class_folders, image_dir,
                                                validation_dir)
        splits = split_images(images, classes, validation_ratio, seed,
                              separate_validation=validation_dir is not None)
        shards = write_splits(splits, num_shards, tmp_dir)
        write_labels(tmp_dir, classes)
        options = {"image_dir": os.path.abspath(image_dir),
                   "validation_dir": validation_dir and os.path.abspath(validation_dir),
                   "validation_ratio": validation_ratio, "seed": seed,
                   "max_side": max_side, "num_shards": num_shards,
                   "jpeg_quality": JPEG_QUALITY}
        info = describe(classes, splits, shards, skipped, duplicates, conflicts,
                        empty_classes, options)
        with open(os.path.join(tmp_dir, DATASET_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1, ensure_ascii=False)
        _replace_outputs(tmp_dir, output_dir, shards["train"] + shards["validation"])
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return info


def _print_report(info, output_dir):
    total = sum(info["num_examples"].values())
    print(f"{total} images in {len(info['classes'])} classes -> {output_dir}: "
          f"train {info['num_examples']['train']} in {len(info['shards']['train'])} shard(s), "
          f"validation {info['num_examples']['validation']} in "
          f"{len(info['shards']['validation'])} shard(s)")
    width = max(len(name) for name in info["classes"])
    for index, name in enumerate(info["classes"]):
        counts = info["counts"][name]
        print(f"  {index:3d} {name:<{width}}  train {counts['train']:6d}  "
              f"validation {counts['validation']:6d}")
    for name in info["empty_classes"]:
        print(f"  not a class: {name} (no usable image)")
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} file(s):")
        for entry in info["skipped"]:
            print(f"  {entry['path']}: {entry['reason']}")
    if info["label_conflicts"]:
        print(f"{len(info['label_conflicts'])} image(s) appear in more than one class: "
              "fix the labels and re-run")
    print(f"report: {os.path.join(output_dir, DATASET_FILE)}")


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description="Convert a class-per-folder image tree to TFRecords.")
    parser.add_argument("--image_dir", default="data/images",
                        help="one sub-folder of images per class (default: %(default)s)")
    parser.add_argument("--output_dir", default="data/tfrecords",
                        help="where shards, labels.txt and dataset.json go (default: %(default)s)")
    parser.add_argument("--validation_ratio", type=cli.below_one, default=0.2,
                        help="fraction of each class held out for validation (default: %(default)s)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0,
                        help="seed of the split and shard order (default: %(default)s)")
    parser.add_argument("--validation_dir", default=None,
                        help="a separate class-per-folder validation tree; "
                             "replaces --validation_ratio")
    parser.add_argument("--max_side", type=cli.int_in_range(32, 65500), default=None,
                        help="shrink images whose longer side exceeds this many pixels "
                             "(smaller, faster records; detail beyond it is lost)")
    parser.add_argument("--num_shards", type=cli.positive_int, default=None,
                        help="shards per split (default: ~100 MB each, several when large)")
    parser.add_argument("--workers", type=cli.positive_int, default=None,
                        help="processes decoding images (default: all cores)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    info = convert(args.image_dir, args.output_dir, args.validation_ratio, args.seed,
                   args.validation_dir, args.max_side, args.num_shards, args.workers)
    _print_report(info, args.output_dir)


# ---------------------------------------------------------------------------
# Read side
# ---------------------------------------------------------------------------
def write_labels(folder, names):
    """labels.txt in folder: one "index:name" line per class, in label order
    (TF-slim's dataset_utils.write_label_file format), UTF-8."""
    with open(os.path.join(folder, LABELS_FILE), "w", encoding="utf-8") as f:
        f.writelines(f"{index}:{name}\n" for index, name in enumerate(names))


def read_labels(path):
    """labels.txt ("index:name" lines) -> list of names in index order."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            index, sep, name = line.partition(":")
            if not sep or not index.isdigit() or int(index) != len(names):
                raise UserError(f"{path} line {line_number} is not 'index:name' in order: "
                                f"{line!r}; re-run FlowIO.py")
            names.append(name)
    return names


def load_dataset_info(data_dir):
    """dataset.json of a FlowIO output folder, with a clear error if absent."""
    path = os.path.join(data_dir, DATASET_FILE)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: run 'python FlowIO.py --output_dir {data_dir}' first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def shard_paths(data_dir, split):
    info = load_dataset_info(data_dir)
    paths = [os.path.join(data_dir, name) for name in info["shards"].get(split, [])]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"{missing[0]} is missing: re-run FlowIO.py to rebuild {data_dir}")
    return paths


def normalize(image):
    """float RGB in 0..255 -> the network's input scale."""
    return (image - tf.constant(MEAN_RGB)) / tf.constant(STD_RGB)


def preprocess_for_eval(encoded, image_size):
    """JPEG bytes -> [image_size, image_size, 3] float: shorter side resized to
    image_size / EVAL_CROP, then the central square. The only eval transform."""
    image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = math.ceil(image_size / EVAL_CROP) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, resized, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    return normalize(image)


def preprocess_for_train(encoded, image_size, seed):
    """JPEG bytes -> a random crop (TRAIN_CROP_AREA of the area, aspect 3/4..4/3)
    resized to image_size, randomly flipped. Decodes only the crop.

    seed: an int64 pair; stateless random ops make each image's augmentation
    a function of it, so a seeded run repeats exactly (make_dataset draws one
    per image).
    """
    shape = tf.io.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=TRAIN_CROP_AREA,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    # The crop is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling)
    # when its shorter side is at least that many times image_size: decoding
    # and resizing then touch 4-64x fewer pixels, and the DCT scaling is a
    # properly filtered downscale. What is left to resize is a factor below 2,
    # where plain bilinear (TF-slim's choice) no longer aliases, so the
    # costlier antialiased kernel is not needed here. (The crop window is
    # given in the scaled image's coordinates.)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    shorter = tf.minimum(size[0], size[1])
    ratios = (1, 2, 4, 8)
    scale_index = tf.add_n([tf.cast(shorter >= r * image_size, tf.int32) for r in ratios[1:]])
    image = tf.switch_case(scale_index, [
        lambda ratio=ratio: tf.io.decode_and_crop_jpeg(
            encoded, tf.maximum(window // ratio, [0, 0, 1, 1]), channels=3, ratio=ratio,
            dct_method="INTEGER_FAST")  # faster IDCT; its error is far below augmentation's
        for ratio in ratios])
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
    image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])
    return normalize(image)


LABEL_OUT_OF_RANGE = "a record's label is not one of the classes of dataset.json"
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def _parse_record(record, num_classes):
    """One serialized Example -> its features, with a label checked to be one
    of the classes: a label outside them would otherwise train as no class
    at all (tf.one_hot gives zeros) or be counted under a wrong one."""
    features = tf.io.parse_single_example(record, _FEATURES)
    label = features["image/class/label"]
    in_range = tf.logical_and(label >= 0, label < num_classes)
    with tf.control_dependencies([tf.debugging.Assert(in_range, [LABEL_OUT_OF_RANGE, label])]):
        features["image/class/label"] = tf.identity(label)
    return features


def make_dataset(data_dir, split, image_size, batch_size, training, seed=None,
                 cache=False, shard=None):
    """tf.data pipeline of (images, labels, filenames) batches for one split.

    training: shuffled shards and records, random crops/flips, repeats forever,
      drops the last partial batch. Otherwise: every record once, in order,
      with the eval transform.
    cache: keep the encoded records in memory after the first pass (for data
      that fits in memory).
    shard: (index, count): this reader's share when `count` readers (train.py's
      workers) share the split: every count-th file, or with fewer files than
      readers, every count-th record.
    Corrupt records raise tf.errors.DataLossError; they are never skipped
    (ignore_errors() would silently drop the rest of a shard): see
    explain_data_error().
    """
    paths = shard_paths(data_dir, split)
    if not paths:
        raise UserError(f"{data_dir} has no {split} records: re-run FlowIO.py "
                        f"with --validation_ratio above 0 or --validation_dir")
    autotune = tf.data.AUTOTUNE
    index, count = shard or (0, 1)
    by_record = count > len(paths)
    if not by_record:
        paths = paths[index::count]  # before any shuffle, so the shares never overlap
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training and not by_record:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # Unseeded training takes records in whatever order they arrive (faster);
    # readers that share the records out by position need one fixed order.
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
                               num_parallel_calls=autotune,
                               deterministic=not training or seed is not None or by_record)
    if by_record:
        records = records.shard(count, index)
    num_classes = len(load_dataset_info(data_dir)["classes"])
    records = records.map(lambda r: _parse_record(r, num_classes),
                          num_parallel_calls=autotune)
    if cache:
        records = records.cache()
    if training:
        records = records.shuffle(10000, seed=seed, reshuffle_each_iteration=True).repeat()
    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)  # an augmentation seed per image
        dataset = tf.data.Dataset.zip((records, seeds)).map(
            lambda f, s: (preprocess_for_train(f["image/encoded"], image_size, s),
                          tf.cast(f["image/class/label"], tf.int32), f["image/filename"]),
            num_parallel_calls=autotune, deterministic=seed is not None)
    else:
        dataset = records.map(
            lambda f: (preprocess_for_eval(f["image/encoded"], image_size),
                       tf.cast(f["image/class/label"], tf.int32), f["image/filename"]),
            num_parallel_calls=autotune)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(autotune)


def explain_data_error(data_dir, split, error):
    """A one-line UserError naming the shard behind an error reading a split:
    a damaged record (DataLossError) or a label outside the classes."""
    num_classes = len(load_dataset_info(data_dir)["classes"])
    for path in shard_paths(data_dir, split):
        try:
            for record in tf.compat.v1.io.tf_record_iterator(path):
                label = tf.train.Example.FromString(record).features.feature[
                    "image/class/label"].int64_list.value
                if not label or not 0 <= label[0] < num_classes:
                    return UserError(f"{path} has a record labelled {list(label)}, outside "
                                     f"the {num_classes} classes of {data_dir}/{DATASET_FILE}: "
                                     f"re-run FlowIO.py to rebuild {data_dir}")
        except tf.errors.DataLossError as shard_error:
            return UserError(f"{path} is damaged ({cli.reason(shard_error)}): "
                             f"re-run FlowIO.py to rebuild {data_dir}")
    return UserError(f"reading {data_dir} failed ({cli.reason(error)}): re-run FlowIO.py")


if __name__ == "__main__":
    cli.run_main(main)
