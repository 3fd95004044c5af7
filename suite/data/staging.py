"""Decoding every image of a conversion in parallel, and staging what is
stored on disk until the split is known (FlowIO.py's heavy part)."""
import hashlib
import multiprocessing
import os
import signal

from suite.images.decoding import BadImage, encode_image_bytes, read_image_file
from suite.plumbing.files import close_inherited_locks
from suite.plumbing.progress import Progress

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
    re-encode) is inside the one error path: suite.images raises BadImage for
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


def _convert_all(tasks, workers):
    """Runs _convert_one over tasks on `workers` processes, in order."""
    total = len(tasks)
    progress = Progress(total, lambda done, rate: f"converting: {done}/{total} ({rate:.0f}/s)",
                        bar=True)
    results = []
    if workers <= 1 or len(tasks) < 64:
        iterator = map(_convert_one, tasks)
        pool = None
    else:
        # fork: workers need only Pillow, and TensorFlow has run nothing yet.
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_start_worker)
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


def _start_worker():
    """A forked conversion worker: without the parent's locks, and with the
    default signal handling, whatever handlers the parent script installed
    (suite.plumbing.signals): pool.terminate()'s SIGTERM then ends it at
    once, even in C code, and Ctrl-C is the parent's to handle."""
    close_inherited_locks()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_all(files, staging_dir, max_side, workers):
    """Decodes, checks and stages every file in parallel; returns
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
