"""The conversion: a class-per-folder tree -> TFRecord shards, labels.txt and
dataset.json (suite.data.contract), in steps:

    find_files      every file of the tree(s), by class (suite.data.folders),
                    less those --exclude lists (exclude_files)
    decode_all      each decoded, checked and staged (suite.data.staging)
    deduplicate     one copy of each image; the same image in two classes dropped
    choose_classes  the class folders with usable images, sorted
    split_images    stratified train/validation split
    write_splits    the shards
    describe        dataset.json, the report

convert() runs them inside the locked output folder (suite.data.output_dir).
"""
import dataclasses
import hashlib
import math
import os
import random
import re
import shutil
import statistics
import tempfile

import tensorflow as tf

from suite.data import output_dir as outputs
from suite.data.contract import DATASET_FILE, SPLITS, make_example, shard_name, write_labels
from suite.data.folders import exclude_files, find_files, read_exclude_list
from suite.data.staging import decode_all
from suite.images.decoding import JPEG_QUALITY
from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write_json
from suite.plumbing.names import display_name, some


def deduplicate(images):
    """One copy of each distinct image (by content).

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
            skipped.append({"path": c["path"], "reason": "duplicate of an image kept: "
                            + display_name(copies[0]["path"])})
    return kept, duplicates, conflicts, skipped


def choose_classes(images, class_folders, image_dir, validation_dir=None):
    """The classes are the --image_dir folders with at least one usable
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
    """{"train": [...], "validation": [...]}, each image given its
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
    """The TFRecord shards of each split; returns {split: [names]}."""
    shards = {}
    for split, items in splits.items():
        if not items:
            shards[split] = []
            continue
        count = num_shards or _auto_num_shards(sum(i["bytes"] for i in items), len(items))
        shards[split] = _write_shards(split, items, min(count, len(items)), out_dir)
    return shards


def describe(classes, splits, shards, skipped, duplicates, conflicts, empty_classes, options):
    """The dataset.json dict, the report of the run. Paths are given as
    display_name writes them (a name that is not UTF-8 cannot be
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


@dataclasses.dataclass(frozen=True)
class Options:
    """FlowIO.py's settings (its flags of the same names)."""
    validation_ratio: float = 0.2
    seed: int = 0
    validation_dir: str = None
    max_side: int = None
    num_shards: int = None
    workers: int = None
    overwrite: bool = False
    max_validation: int = MAX_VALIDATION
    exclude: str = None  # a list of files to leave out (folders.read_exclude_list)

    def record(self, image_dir):
        """What dataset.json records under "options"."""
        return {"image_dir": display_name(os.path.abspath(image_dir)),
                "validation_dir": self.validation_dir
                and display_name(os.path.abspath(self.validation_dir)),
                "validation_ratio": self.validation_ratio,
                "max_validation": self.max_validation, "seed": self.seed,
                "max_side": self.max_side, "num_shards": self.num_shards,
                "jpeg_quality": JPEG_QUALITY,
                "exclude": self.exclude and display_name(os.path.abspath(self.exclude))}


def convert(image_dir, output_dir, **settings):
    """Converts a class-per-folder tree; returns the dataset.json dict.
    settings: the fields of Options.

    The input is checked before anything is written; output_dir is locked
    for the run (a second run into it is refused). Everything is written into
    a temporary folder inside output_dir and moved into place at the end, so
    an interrupted or failed run (a full or read-only disk: one UserError)
    leaves the previous output. Only files an earlier FlowIO run wrote are
    replaced; a folder that is not FlowIO's output is refused unless
    overwrite (see suite.data.output_dir.previous_outputs).
    """
    options = Options(**settings)
    for name, folder in (("--image_dir", image_dir), ("--validation_dir", options.validation_dir)):
        if folder is not None and not os.path.isdir(folder):
            raise UserError(f"{name} {display_name(folder)} is not a folder: put one "
                            f"sub-folder of images per class there")
    if not 0 <= options.validation_ratio < 1:
        raise UserError(f"--validation_ratio {options.validation_ratio} must be in [0, 1)")
    found = find_files(image_dir, options.validation_dir)
    left_out = None
    if options.exclude:
        files, skipped, class_folders = found
        files, *left_out = exclude_files(files, read_exclude_list(options.exclude), image_dir,
                                         options.validation_dir)
        found = files, skipped, class_folders
    # A foreign folder is refused before anything is written to it.
    outputs.previous_outputs(output_dir, options.overwrite)
    with outputs.lock(output_dir):
        outputs.check_writable(output_dir)
        outputs.remove_stale_temporaries(output_dir)
        # Read again now that no other run can change it.
        previous = outputs.previous_outputs(output_dir, options.overwrite)
        tmp_dir = None
        try:
            tmp_dir = tempfile.mkdtemp(prefix=outputs.TEMPORARY_PREFIXES[0], dir=output_dir)
            info = _convert_into(tmp_dir, image_dir, found, options, left_out)
            outputs.replace_outputs(tmp_dir, output_dir,
                                    info["shards"]["train"] + info["shards"]["validation"],
                                    previous)
        except (OSError, tf.errors.OpError) as error:
            # Reading the images cannot get here (suite.images turns that into
            # a skipped file): this is our own writing, to a full or read-only disk.
            raise outputs.cannot_write(output_dir, error) from None
        finally:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
    return info


def _convert_into(tmp_dir, image_dir, found, options, left_out=None):
    """The conversion's steps after finding the files, writing the shards,
    labels.txt and dataset.json into tmp_dir; returns dataset.json's dict.
    left_out: (excluded paths, listed entries that named no file) of --exclude."""
    files, skipped, class_folders = found
    images, unusable = decode_all(files, os.path.join(tmp_dir, "staging"), options.max_side,
                                  options.workers or os.cpu_count() or 1)
    images, duplicates, conflicts, repeated = deduplicate(images)
    skipped = skipped + unusable + repeated
    classes, empty_classes = choose_classes(images, class_folders, image_dir,
                                            options.validation_dir)
    share = validation_share(options.validation_ratio, options.max_validation,
                             sum(image["class_name"] in classes for image in images))
    splits = split_images(images, classes, share, options.seed,
                          separate_validation=options.validation_dir is not None)
    shards = write_splits(splits, options.num_shards, tmp_dir)
    write_labels(tmp_dir, classes)
    info = describe(classes, splits, shards, skipped, duplicates, conflicts, empty_classes,
                    options.record(image_dir))
    if left_out:
        info["excluded"] = [display_name(path) for path in left_out[0]]
        info["exclude_unmatched"] = [display_name(entry) for entry in left_out[1]]
    atomic_write_json(os.path.join(tmp_dir, DATASET_FILE), info, indent=1)
    return info


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
            writers[i % num_shards].write(make_example(
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


def print_report(info, output_dir):
    """The conversion's summary on stdout: counts per class and split, what
    was skipped and why, and where the report is."""
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
    print_skipped(info["skipped"], display_name(os.path.join(output_dir, DATASET_FILE)))
    if "excluded" in info:
        unmatched = info["exclude_unmatched"]
        print(f"{len(info['excluded'])} image(s) left out as --exclude lists them"
              + (f"; {len(unmatched)} listed path(s) named no image of the tree, e.g. "
                 f"{', '.join(unmatched[:3])}" if unmatched else ""))
    if info["label_conflicts"]:
        print(f"{len(info['label_conflicts'])} image(s) appear in more than one class: "
              "fix the labels and re-run")
    print(f"report: {display_name(os.path.join(output_dir, DATASET_FILE))}")


EXAMPLES_PER_REASON = 3


def reason_kind(reason):
    """A skip reason without its particulars (what follows ": " or " (", and
    numbers): the kind of problem, which the report counts files by."""
    head = re.split(r": | \(", reason, maxsplit=1)[0]
    return re.sub(r"[0-9][0-9,x]*", "N", head)


def print_skipped(skipped, full_list, out=None):
    """The skipped files (dataset.json's "skipped") counted by kind of
    reason, most common first, with a few of each: 100,000 empty files are a
    line, not 100,000. full_list: where every file is listed with its reason."""
    if not skipped:
        return
    by_kind = {}
    for entry in skipped:
        by_kind.setdefault(reason_kind(entry["reason"]), []).append(entry["path"])
    print(f"skipped {len(skipped)} file(s), by reason (each one with its reason: {full_list}, "
          f'"skipped"):', file=out)
    for kind, paths in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        print(f"  {len(paths):7d}  {kind}: {some(paths, EXAMPLES_PER_REASON)}", file=out)
