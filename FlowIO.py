"""Class-per-folder images -> TFRecords, and the one input pipeline that reads them.

    python FlowIO.py [--image_dir data/images] [--output_dir data/tfrecords]
                     [--validation_ratio 0.2] [--seed 0] [--validation_dir DIR]
                     [--max_side N] [--num_shards N] [--workers N] [--overwrite]

Write side: every top-level sub-folder of --image_dir is a class (sorted names;
images in deeper folders belong to it). Each file is decoded by content with
Pillow and normalised to 8-bit RGB (EXIF orientation applied; CMYK, grayscale,
palette and 16-bit images converted; alpha composited on white; first frame of
an animation), then stored as JPEG. Files that cannot be used are skipped and
reported with their reason; nothing is dropped silently. Writes to
--output_dir: labels.txt ("index:name", UTF-8), train-*/validation-* TFRecord
shards, and dataset.json (classes, counts, skipped files, duplicates, options,
a fingerprint of the data; its "shards" are how a later run knows which files
are FlowIO's). A re-run replaces only those; a non-empty folder that is not
FlowIO's output is refused unless --overwrite. One run at a time per folder:
it holds an OS lock on --output_dir/.flowio.lock, released when it ends or dies.

Read side (used by train.py, Evaluation.py and useModel.py): `make_dataset`,
`preprocess_for_train` and `preprocess_for_eval`, with imagefile.py the one
definition of how an image becomes the network's input, and `read_labels` /
`write_labels`, the one definition of the label file.
"""
import contextlib
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
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
from imagefile import (JPEG_QUALITY, BadImage, display_name, encode_image_bytes,
                       eval_shorter_side, is_hidden, read_image_file, walk_files)

# ---------------------------------------------------------------------------
# Facts shared by the write and the read side
# ---------------------------------------------------------------------------
LABELS_FILE = "labels.txt"
DATASET_FILE = "dataset.json"
LOCK_FILE = ".flowio.lock"             # flock()ed by the run writing the folder
JOURNAL_FILE = ".flowio-replacing.json"  # what a run is swapping in and out (see _replace_outputs)
_TEMPORARY_PREFIXES = (".flowio-tmp-", ".flowio-probe-")  # a run's own, removed when it ends
_SHARD_NAME = re.compile(r"(train|validation)-[0-9]{5}-of-[0-9]{5}\.tfrecord\Z")
SPLITS = ("train", "validation")
# Input normalisation, in 0..255 units: ImageNet's per-channel mean and std.
# A model's own values are in its model.json ("preprocessing", see normalize);
# these are what train.py records for a model trained from scratch, and what
# normalize takes where a model.json has none.
MEAN_RGB = (123.68, 116.78, 103.94)
STD_RGB = (58.40, 57.12, 57.38)
# eval_crop, how much of the image evaluation keeps, is imagefile.py's:
# clients apply it there without TensorFlow.
# Training augmentation presets (train.py --augment): the random crop's share
# of the image area and range of aspect ratios, and whether to flip. "none"
# trains on the evaluation transform. "light" keeps 56-100% of the area (75-
# 100% of the side): shifted and zoomed by up to a third, around both of
# evaluation's scales, the whole image (small images) and the 87.5% centre
# crop, which is what pad-and-crop does for CIFAR-sized images; "standard"
# and "strong" zoom in up to 2x and 3.5x (strong is Inception's crop, Szegedy
# et al., arXiv 1409.4842), which photos can afford and a 28-px image cannot
# (BENCHMARKS.md, "Accuracy").
AUGMENTATIONS = {
    "none": None,
    "light": {"area": (0.56, 1.0), "aspect": (1.0, 1.0), "flip": True},
    "standard": {"area": (0.25, 1.0), "aspect": (3 / 4, 4 / 3), "flip": True},
    "strong": {"area": (0.08, 1.0), "aspect": (3 / 4, 4 / 3), "flip": True},
}


# ---------------------------------------------------------------------------
# Finding the images
# ---------------------------------------------------------------------------
def find_images(image_dir):
    """{class name: [file paths]} for a class-per-folder tree, and what cannot
    be used as {"path", "reason"}: files outside any class folder (they cannot
    be labelled) and folders that could not be listed."""
    try:
        entries = sorted(os.listdir(image_dir))
    except OSError as error:
        raise UserError(f"cannot list {display_name(image_dir)}: "
                        f"{error.strerror or error}; check its permissions")
    classes, skipped = {}, []
    for entry in entries:
        path = os.path.join(image_dir, entry)
        if is_hidden(entry):
            continue
        if os.path.isdir(path):
            classes[entry], unlisted = walk_files(path)
            skipped.extend(unlisted)
        else:
            skipped.append({"path": path, "reason": "not inside a class folder"})
    return classes, skipped


def class_name_problem(name):
    """Why a class folder's name cannot be a line of labels.txt, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogates
        return "is not valid UTF-8"
    if not name.strip():
        return "is blank"
    if name.splitlines() != [name]:  # every separator str.splitlines knows, not only \n
        return "contains a line break"
    return None


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
    """Reads, checks, normalises and stages one image; returns its record.

    Everything that touches the file (stat, read, hash, decode, convert,
    re-encode) is inside the one error path: imagefile raises BadImage for
    all of it, so one file is one skipped entry, never the end of the run.
    Only staging (our own output) may raise: a full disk stops the run.
    """
    index, path, staging_dir, max_side = task
    try:
        data = read_image_file(path)
        digest = hashlib.sha256(data).hexdigest()
        encoded, height, width = encode_image_bytes(data, max_side)
    except BadImage as error:
        return {"index": index, "error": str(error)}
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


# Lock files this process holds (see _lock_output_dir).
_HELD_LOCKS = set()


def _drop_inherited_locks():
    """In a forked worker: close the copy of the output lock, so the lock ends
    with the main process even if a worker outlives it."""
    for fd in _HELD_LOCKS:
        os.close(fd)
    _HELD_LOCKS.clear()


def _convert_all(tasks, workers):
    """Runs _convert_one over tasks on `workers` processes, in order."""
    progress = _Progress(len(tasks), "converting")
    results = []
    if workers <= 1 or len(tasks) < 64:
        iterator = map(_convert_one, tasks)
        pool = None
    else:
        # fork: workers need only Pillow, and TensorFlow has run nothing yet.
        pool = multiprocessing.get_context("fork").Pool(workers,
                                                        initializer=_drop_inherited_locks)
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
        # The name's own bytes: a file name need not be UTF-8 (fsencode
        # undoes Python's surrogate escapes; UTF-8 names are unchanged).
        "image/filename": _bytes_feature(os.fsencode(filename)),
    }))


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _write_shards(split, examples, num_shards, out_dir):
    """Writes examples round-robin into num_shards files; returns their names."""
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.fsencode(os.path.join(out_dir, name)))
               for name in names]
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
        digest.update(f"{e['split']}\t{e['filename']}\t{e['label']}\t{e['sha256']}\n"
                      .encode("utf-8", "surrogateescape"))  # a name's own bytes
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# The output folder: one run at a time, and only FlowIO's own files replaced
# ---------------------------------------------------------------------------
def _is_bookkeeping(name):
    """FlowIO's own hidden files in --output_dir: the lock, the journal and
    the temporaries of a run."""
    return name in (LOCK_FILE, JOURNAL_FILE) or name.startswith(_TEMPORARY_PREFIXES)


def _some(names, shown=5):
    """A few names for a one-line message, however many there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(display_name(name) for name in names[:shown]) + more


def _cannot_write(output_dir, error):
    """The one-line UserError for a failed write (read-only, full, gone)."""
    if isinstance(error, tf.errors.OpError):
        reason = error.message.splitlines()[0] if error.message else type(error).__name__
    else:
        reason = error.strerror or str(error)
    return UserError(f"cannot write to --output_dir {display_name(output_dir)}: {reason}; "
                     f"choose a writable folder with free space (nothing there was replaced)")


def _check_writable(output_dir):
    try:
        probe = tempfile.NamedTemporaryFile(dir=output_dir, prefix=_TEMPORARY_PREFIXES[1])
        probe.close()
    except OSError as error:
        raise _cannot_write(output_dir, error)


@contextlib.contextmanager
def _lock_output_dir(output_dir):
    """Holds an exclusive flock() on output_dir/LOCK_FILE for the run; a
    second run into the same folder gets a one-line refusal.

    An OS lock ends with its process, so a killed run never blocks the next
    one, as a lock file that merely exists would. The file stays: deleting it
    would let a third run lock a fresh file while the second holds the old.
    """
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd = os.open(os.path.join(output_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _cannot_write(output_dir, error)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip()
            holder = f" (process {holder})" if holder.isdigit() else ""
            raise UserError(f"another FlowIO.py run{holder} is writing to --output_dir "
                            f"{display_name(output_dir)}: wait for it to finish, or choose "
                            f"another folder")
        except OSError as error:
            raise UserError(f"cannot lock --output_dir {display_name(output_dir)}: "
                            f"{error.strerror or error}; choose a folder on a local disk")
        try:  # who holds it, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            raise _cannot_write(output_dir, error)
        _HELD_LOCKS.add(fd)
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)


def _listed_outputs(path):
    """The file names a FlowIO report (dataset.json: its shards, labels.txt
    and itself) or journal ({"files": [...]}) lists, or None when the file is
    not one: unreadable, not JSON, or naming a file FlowIO never writes (so
    an edited report can never make FlowIO delete anything else)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if isinstance(info, dict) and "files" in info:
            names = list(info["files"])
        else:
            names = [name for split in SPLITS for name in info["shards"].get(split, [])]
            names += [LABELS_FILE, DATASET_FILE]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(isinstance(name, str) and (name in (LABELS_FILE, DATASET_FILE)
                                          or _SHARD_NAME.match(name)) for name in names):
        return None
    return set(names)


def _previous_outputs(output_dir, overwrite=False):
    """The files in output_dir that an earlier FlowIO run wrote: a re-run
    replaces those and only those.

    A folder that holds anything else and has no FlowIO report (dataset.json,
    or the journal of a run killed while swapping files) is not FlowIO's
    output: it is refused, before anything is written, unless overwrite;
    then only files of the names this run writes are replaced.
    """
    try:
        names = sorted(name for name in os.listdir(output_dir) if not _is_bookkeeping(name))
    except (FileNotFoundError, NotADirectoryError):
        return set()  # created (or refused) when the folder is locked
    except OSError as error:
        raise _cannot_write(output_dir, error)
    owned, invalid = set(), []
    for report in (DATASET_FILE, JOURNAL_FILE):
        path = os.path.join(output_dir, report)
        if os.path.lexists(path):
            listed = _listed_outputs(path)
            if listed is None:
                invalid.append(report)
            else:
                owned |= listed
    if names and (invalid or not owned) and not overwrite:
        why = (f"its {', '.join(invalid)} is not a FlowIO.py report" if invalid else
               f"it holds files FlowIO.py did not write ({_some(names)})")
        raise UserError(
            f"--output_dir {display_name(output_dir)} is not empty and not FlowIO.py's "
            f"output: {why}; choose an empty or new folder, or add --overwrite to write "
            f"there anyway (it replaces only files named as FlowIO.py's: {LABELS_FILE}, "
            f"{DATASET_FILE}, train-/validation-NNNNN-of-NNNNN.tfrecord)")
    return owned


def _replace_outputs(new_dir, output_dir, names, previous):
    """Moves the finished files in, and removes the rest of the previous
    output: only files FlowIO wrote (previous), never anything else.

    dataset.json goes first out and last in: readers need it, so a run killed
    while files are swapped leaves an output that asks to be rebuilt rather
    than a mix of old and new shards. The journal, in place before anything
    moves, lists both the old and the new files, so the run that rebuilds it
    still knows which files are FlowIO's.
    """
    new = names + [LABELS_FILE, DATASET_FILE]
    journal = os.path.join(new_dir, JOURNAL_FILE)
    with open(journal, "w", encoding="utf-8") as f:
        json.dump({"files": sorted(previous | set(new))}, f)
    os.replace(journal, os.path.join(output_dir, JOURNAL_FILE))
    leaving = sorted(previous - set(new))
    for name in ([DATASET_FILE] if DATASET_FILE in previous else []) + leaving:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, name))
    for name in new:
        os.replace(os.path.join(new_dir, name), os.path.join(output_dir, name))
    os.remove(os.path.join(output_dir, JOURNAL_FILE))


def _remove_stale_temporaries(output_dir):
    """Temporary folders of runs that were killed before they finished. Called
    only while holding the lock: a run still alive would hold it, so every
    temporary folder found then is a dead run's."""
    for name in os.listdir(output_dir):
        if name.startswith(_TEMPORARY_PREFIXES):
            path = os.path.join(output_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)


# ---------------------------------------------------------------------------
# The conversion's steps
# ---------------------------------------------------------------------------
def find_files(image_dir, validation_dir=None):
    """Step 1: every file of the tree(s): (files, skipped, class folders).

    files: one dict per file with "tree" ("train" for --image_dir,
    "validation" for --validation_dir), "class_name", "path" and "filename"
    (the path relative to its tree, stored in the record). A class folder
    whose name cannot be a line of labels.txt is a UserError, raised before
    anything is written.
    """
    trees = [("train", image_dir)] + ([("validation", validation_dir)] if validation_dir else [])
    files, skipped, class_folders = [], [], []
    for tree, root in trees:
        classes, unusable = find_images(root)
        if tree == "train":
            if not classes:
                raise UserError(f"--image_dir {display_name(root)} has no class folders: put "
                                f"one sub-folder of images per class there")
            class_folders = list(classes)
        bad = [(name, problem) for name in classes
               if (problem := class_name_problem(name)) is not None]
        if bad:
            raise UserError(
                f"{display_name(root)}: class folder name(s) that labels.txt cannot hold: "
                + "; ".join(f"'{display_name(name)}' {problem}" for name, problem in bad)
                + ": rename them (a class name is one line of UTF-8 text)")
        skipped.extend(unusable)
        for class_name, paths in classes.items():
            files.extend({"tree": tree, "class_name": class_name, "path": p,
                          "filename": os.path.relpath(p, root)} for p in paths)
    if not files:
        raise UserError(f"--image_dir {display_name(image_dir)} has no files in its class "
                        f"folders")
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
            skipped.append({"path": c["path"],
                            "reason": f"duplicate of {display_name(copies[0]['path'])}"})
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
    """Step 7: the dataset.json dict, the report of the run. Paths are given
    as imagefile.display_name writes them (a name that is not UTF-8 cannot be
    JSON text; the records keep its bytes)."""
    all_items = splits["train"] + splits["validation"]
    skipped = [{"path": display_name(e["path"]), "reason": e["reason"]} for e in skipped]
    duplicates = [{"path": display_name(d["path"]), "duplicate_of": display_name(d["duplicate_of"])}
                  for d in duplicates]
    conflicts = [{"paths": [display_name(p) for p in c["paths"]], "classes": c["classes"]}
                 for c in conflicts]
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


MAX_VALIDATION = 5000  # --max_validation's default


def validation_share(validation_ratio, max_validation, num_images):
    """The fraction of each class held out: validation_ratio, lowered so
    that about max_validation images are held out in all (0: no cap). 5,000
    measure top-1 to +-0.4% (95%), which is plenty to choose a checkpoint;
    every image beyond that does more good in training."""
    if not max_validation or num_images * validation_ratio <= max_validation:
        return validation_ratio
    return max_validation / num_images


def convert(image_dir, output_dir, validation_ratio=0.2, seed=0, validation_dir=None,
            max_side=None, num_shards=None, workers=None, overwrite=False,
            max_validation=MAX_VALIDATION):
    """Converts a class-per-folder tree; returns the dataset.json dict.

    The input is checked before anything is written; output_dir is locked
    for the run (a second run into it is refused). Everything is written into
    a temporary folder inside output_dir and moved into place at the end, so
    an interrupted or failed run (a full or read-only disk: one UserError)
    leaves the previous output. Only files an earlier FlowIO run wrote are
    replaced; a folder that is not FlowIO's output is refused unless
    overwrite (see _previous_outputs).
    """
    for name, folder in (("--image_dir", image_dir), ("--validation_dir", validation_dir)):
        if folder is not None and not os.path.isdir(folder):
            raise UserError(f"{name} {display_name(folder)} is not a folder: put one "
                            f"sub-folder of images per class there")
    if not 0 <= validation_ratio < 1:
        raise UserError(f"--validation_ratio {validation_ratio} must be in [0, 1)")
    files, skipped, class_folders = find_files(image_dir, validation_dir)
    _previous_outputs(output_dir, overwrite)  # a foreign folder is refused untouched
    with _lock_output_dir(output_dir):
        _check_writable(output_dir)
        _remove_stale_temporaries(output_dir)
        previous = _previous_outputs(output_dir, overwrite)  # now that no run can change it
        tmp_dir = None
        try:
            tmp_dir = tempfile.mkdtemp(prefix=_TEMPORARY_PREFIXES[0], dir=output_dir)
            images, unusable = decode_all(files, os.path.join(tmp_dir, "staging"), max_side,
                                          workers or os.cpu_count() or 1)
            images, duplicates, conflicts, repeated = deduplicate(images)
            skipped += unusable + repeated
            classes, empty_classes = choose_classes(images, class_folders, image_dir,
                                                    validation_dir)
            share = validation_share(validation_ratio, max_validation,
                                     sum(image["class_name"] in classes for image in images))
            splits = split_images(images, classes, share, seed,
                                  separate_validation=validation_dir is not None)
            shards = write_splits(splits, num_shards, tmp_dir)
            write_labels(tmp_dir, classes)
            options = {"image_dir": display_name(os.path.abspath(image_dir)),
                       "validation_dir": validation_dir
                       and display_name(os.path.abspath(validation_dir)),
                       "validation_ratio": validation_ratio,
                       "max_validation": max_validation, "seed": seed,
                       "max_side": max_side, "num_shards": num_shards,
                       "jpeg_quality": JPEG_QUALITY}
            info = describe(classes, splits, shards, skipped, duplicates, conflicts,
                            empty_classes, options)
            with open(os.path.join(tmp_dir, DATASET_FILE), "w", encoding="utf-8") as f:
                json.dump(info, f, indent=1, ensure_ascii=False)
            _replace_outputs(tmp_dir, output_dir, shards["train"] + shards["validation"],
                             previous)
        except (OSError, tf.errors.OpError) as error:
            # Reading the images cannot get here (imagefile turns that into a
            # skipped file): this is our own writing, to a full or read-only disk.
            raise _cannot_write(output_dir, error) from None
        finally:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
    return info


def _print_report(info, output_dir):
    total = sum(info["num_examples"].values())
    print(f"{total} images in {len(info['classes'])} classes -> {display_name(output_dir)}: "
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
    print(f"report: {display_name(os.path.join(output_dir, DATASET_FILE))}")


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description="Convert a class-per-folder image tree to TFRecords.")
    parser.add_argument("--image_dir", default="data/images",
                        help="one sub-folder of images per class (default: %(default)s)")
    parser.add_argument("--output_dir", default="data/tfrecords",
                        help="where shards, labels.txt and dataset.json go (default: %(default)s)")
    parser.add_argument("--validation_ratio", type=cli.below_one, default=0.2,
                        help="fraction of each class held out for validation (default: %(default)s)")
    parser.add_argument("--max_validation", type=cli.non_negative_int, default=MAX_VALIDATION,
                        help="hold out at most about this many images in all, lowering "
                             "--validation_ratio for large sets; 0: no cap "
                             "(default: %(default)s)")
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
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder that is not FlowIO.py's output; "
                             "only files of the names FlowIO.py writes (labels.txt, "
                             "dataset.json, train-/validation-NNNNN-of-NNNNN.tfrecord) "
                             "are replaced, nothing else there is touched")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    info = convert(args.image_dir, args.output_dir, args.validation_ratio, args.seed,
                   args.validation_dir, args.max_side, args.num_shards, args.workers,
                   args.overwrite, args.max_validation)
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


def normalize(image, preprocessing=None):
    """float RGB in 0..255 -> the network's input scale: (image - mean_rgb) / std_rgb.

    The one place that says how pixels are normalised. preprocessing is a
    model.json's "preprocessing" (modeldir checks its values); a key it lacks,
    or None, means ImageNet's mean and std (MEAN_RGB, STD_RGB). A model
    started from TF-slim's checkpoints records std_rgb (1, 1, 1): slim's VGG
    preprocessing, which they were trained with, only subtracts the mean.
    """
    preprocessing = preprocessing or {}
    mean = tf.constant(preprocessing.get("mean_rgb", MEAN_RGB), tf.float32)
    std = tf.constant(preprocessing.get("std_rgb", STD_RGB), tf.float32)
    return (image - mean) / std


def eval_pixels(encoded, image_size):
    """JPEG bytes -> [image_size, image_size, 3] float RGB in 0..255: shorter
    side resized to image_size / eval_crop(image_size) (the whole image up to
    32 px, else the 87.5% centre crop), then the central square. The only
    eval transform (imagefile.eval_pixels is the same without TensorFlow)."""
    image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = eval_shorter_side(image_size) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, resized, antialias=True)
    return tf.image.resize_with_crop_or_pad(image, image_size, image_size)


def preprocess_for_eval(encoded, image_size, preprocessing=None):
    """JPEG bytes -> the network's input: eval_pixels, normalised as a
    model.json's "preprocessing" says (normalize)."""
    return normalize(eval_pixels(encoded, image_size), preprocessing)


def default_augmentation(source_side, image_size):
    """The --augment preset for images whose median side is source_side,
    trained at image_size: "light" when the source is not at least twice the
    training size (cropping a quarter of a 28-px image leaves 14 px to blow
    up), else "standard" (BENCHMARKS.md, "Accuracy")."""
    return "light" if source_side < 2 * image_size else "standard"


# Random erasing (Zhong et al., arXiv 1708.04896): with probability
# --random_erasing, a box of 2-40% of the trained image, of aspect ratio
# 0.3-3.3, is replaced by noise, so the network cannot lean on any one part of
# an item. The paper's ranges; with them its wide ResNet (WRN-28-10) went from
# 4.01% to 3.65% top-1 error on Fashion-MNIST (BENCHMARKS.md has ours).
ERASING_AREA = (0.02, 0.4)
ERASING_ASPECT = (0.3, 1 / 0.3)


def augment(shape, augmentation, seed, image_size, random_erasing=0.0):
    """Every random choice of the training augmentation, for an image of
    `shape` ([height, width, channels]) trained at image_size: (crop window
    [top, left, height, width] of the source, flip, erased box [top, left,
    height, width] of the trained image, empty when none). `augmentation` is
    a preset of AUGMENTATIONS ("none": no crop or flip, the eval transform);
    random_erasing the probability of erasing a box. seed is an int64 pair,
    so a seeded run repeats exactly."""
    preset = AUGMENTATIONS[augmentation]
    if preset is None:
        window, flip = tf.stack([0, 0, shape[0], shape[1]]), tf.constant(False)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
            aspect_ratio_range=preset["aspect"], area_range=preset["area"],
            max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        flip = preset["flip"] & (tf.random.stateless_uniform([], seed[::-1]) < 0.5)
    return window, flip, _erased_box(image_size, random_erasing, seed)


def _erased_box(image_size, probability, seed):
    """augment()'s erased box: area and log-aspect uniform in ERASING_AREA and
    ERASING_ASPECT, clipped to the image, at a uniform place. Off (the
    default), a constant empty box: no per-image draws in the default pipeline."""
    if not probability:
        return tf.zeros([4], tf.int32)
    draws = tf.random.stateless_uniform([5], tf.random.experimental.stateless_fold_in(seed, 1))
    side = float(image_size)
    area = side * side * (ERASING_AREA[0] + (ERASING_AREA[1] - ERASING_AREA[0]) * draws[0])
    low, high = math.log(ERASING_ASPECT[0]), math.log(ERASING_ASPECT[1])
    aspect = tf.exp(low + (high - low) * draws[1])
    height = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, side)
    width = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, side)
    top = tf.floor(draws[2] * (side - height + 1.0))
    left = tf.floor(draws[3] * (side - width + 1.0))
    erase = draws[4] < probability
    box = tf.stack([top, left, tf.where(erase, height, 0.0), tf.where(erase, width, 0.0)])
    return tf.cast(box, tf.int32)


def erase(image, box, seed):
    """`image` (normalised) with `box` ([top, left, height, width]) replaced by
    standard normal noise, drawn from seed (the scale of normalised pixels);
    an empty box leaves the image as it is."""
    size = tf.shape(image)
    inside = _inside_box(size[0], size[1], *tf.unstack(box))
    noise = tf.random.stateless_normal(size, tf.random.experimental.stateless_fold_in(seed, 2))
    return tf.where(inside[:, :, None], noise, image)


def _inside_box(height, width, top, left, box_height, box_width):
    """[height, width] booleans, true inside the box (random erasing's and
    CutMix's); all six of one dtype, int or float."""
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    return ((rows >= top) & (rows < top + box_height)
            & (cols >= left) & (cols < left + box_width))


def decode_crop(encoded, window, image_size):
    """JPEG bytes -> the `window` of the image resized to image_size, decoding
    only the window (a speed trick; what is cropped is augment()'s choice).

    The crop is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when
    its shorter side is at least that many times image_size: decoding and
    resizing then touch 4-64x fewer pixels, and the DCT scaling is a properly
    filtered downscale. What is left to resize is a factor below 2, where
    plain bilinear (TF-slim's choice) no longer aliases, so the costlier
    antialiased kernel is not needed here. (The window is given in the scaled
    image's coordinates.)
    """
    shorter = tf.minimum(window[2], window[3])
    ratios = (1, 2, 4, 8)
    scale_index = tf.add_n([tf.cast(shorter >= r * image_size, tf.int32) for r in ratios[1:]])
    image = tf.switch_case(scale_index, [
        lambda ratio=ratio: tf.io.decode_and_crop_jpeg(
            encoded, tf.maximum(window // ratio, [0, 0, 1, 1]), channels=3, ratio=ratio,
            dct_method="INTEGER_FAST")  # faster IDCT; its error is far below augmentation's
        for ratio in ratios])
    return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])


def preprocess_for_train(encoded, image_size, seed, augmentation="standard",
                         preprocessing=None, random_erasing=0.0):
    """JPEG bytes -> a training image: augment()'s random crop resized to
    image_size and its flip (with augmentation "none", the eval transform),
    normalised as `preprocessing` (a model.json's) says, then its erased box
    (if random_erasing is on) filled with noise."""
    window, flip, box = augment(tf.io.extract_jpeg_shape(encoded), augmentation, seed,
                                image_size, random_erasing)
    if AUGMENTATIONS[augmentation] is None:
        image = eval_pixels(encoded, image_size)
    else:
        image = decode_crop(encoded, window, image_size)
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    image = normalize(image, preprocessing)
    return erase(image, box, seed) if random_erasing > 0 else image


def mix_batch(images, targets, mixup, cutmix):
    """Batch-level augmentation: each batch mixed with itself reversed, by
    mixup (Zhang et al., arXiv 1710.09412: a weighted sum of two images) or
    CutMix (Yun et al., arXiv 1905.04899: a box of one pasted into the other);
    with both on, each batch takes one of them at random. The weight comes
    from Beta(alpha, alpha); targets ([N, classes] probabilities) mix with the
    share each image ends up with. alpha 0 turns a method off. (Random ops
    with graph-level seeds: a run with train.py --seed repeats.)"""
    def beta(alpha):
        first, second = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
        return first / (first + second)

    other_images, other_targets = tf.reverse(images, [0]), tf.reverse(targets, [0])

    def with_mixup():
        weight = beta(mixup)
        return (weight * images + (1 - weight) * other_images,
                weight * targets + (1 - weight) * other_targets)

    def with_cutmix():
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        side_share = tf.sqrt(1.0 - beta(cutmix))  # the box covers 1 - weight of the area
        box_h, box_w = tf.round(height * side_share), tf.round(width * side_share)
        centre = tf.random.uniform([2])
        top = tf.clip_by_value(tf.round(centre[0] * height - box_h / 2), 0, height - box_h)
        left = tf.clip_by_value(tf.round(centre[1] * width - box_w / 2), 0, width - box_w)
        inside = _inside_box(height, width, top, left, box_h, box_w)
        inside = tf.cast(inside, images.dtype)[None, :, :, None]
        weight = 1.0 - box_h * box_w / (height * width)  # after rounding the box
        return (images * (1 - inside) + other_images * inside,
                weight * targets + (1 - weight) * other_targets)

    if mixup > 0 and cutmix > 0:
        return tf.cond(tf.random.uniform([]) < 0.5, with_mixup, with_cutmix)
    if mixup > 0:
        return with_mixup()
    if cutmix > 0:
        return with_cutmix()
    return images, targets


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
                 cache=False, shard=None, augmentation="standard", preprocessing=None,
                 random_erasing=0.0):
    """tf.data pipeline of (images, labels, filenames) batches for one split.

    training: shuffled shards and records, the `augmentation` preset (see
      AUGMENTATIONS), repeats forever, drops the last partial batch.
      Otherwise: every record once, in order, with the eval transform.
    cache: keep the encoded records in memory after the first pass (for data
      that fits in memory).
    shard: (index, count): this reader's share when `count` readers (train.py's
      workers) share the split: every count-th file, or with fewer files than
      readers, every count-th record.
    preprocessing: the model's model.json "preprocessing" (normalize); None
      for the default ImageNet mean and std.
    random_erasing: in training, the probability of erasing a box of each
      image (augment()).
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
    # As bytes: a folder name need not be UTF-8, and a tf.string from str must be.
    files = tf.data.Dataset.from_tensor_slices([os.fsencode(path) for path in paths])
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
            lambda f, s: (preprocess_for_train(f["image/encoded"], image_size, s, augmentation,
                                               preprocessing, random_erasing),
                          tf.cast(f["image/class/label"], tf.int32), f["image/filename"]),
            num_parallel_calls=autotune, deterministic=seed is not None)
    else:
        dataset = records.map(
            lambda f: (preprocess_for_eval(f["image/encoded"], image_size, preprocessing),
                       tf.cast(f["image/class/label"], tf.int32), f["image/filename"]),
            num_parallel_calls=autotune)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(autotune)


def explain_data_error(data_dir, split, error):
    """A one-line UserError naming the shard behind an error reading a split:
    a damaged record (DataLossError) or a label outside the classes."""
    num_classes = len(load_dataset_info(data_dir)["classes"])
    for path in shard_paths(data_dir, split):
        try:
            for record in tf.compat.v1.io.tf_record_iterator(os.fsencode(path)):
                label = tf.train.Example.FromString(record).features.feature[
                    "image/class/label"].int64_list.value
                if not label or not 0 <= label[0] < num_classes:
                    return UserError(f"{display_name(path)} has a record labelled "
                                     f"{list(label)}, outside the {num_classes} classes of "
                                     f"{data_dir}/{DATASET_FILE}: re-run FlowIO.py to "
                                     f"rebuild {data_dir}")
        except tf.errors.DataLossError as shard_error:
            return UserError(f"{display_name(path)} is damaged ({cli.reason(shard_error)}): "
                             f"re-run FlowIO.py to rebuild {data_dir}")
    return UserError(f"reading {data_dir} failed ({cli.reason(error)}): re-run FlowIO.py")


if __name__ == "__main__":
    cli.run_main(main)
