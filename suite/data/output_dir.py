"""FlowIO.py's output folder: one run at a time, and only FlowIO's own files
replaced.

A run holds an OS lock on --output_dir/.flowio.lock, released when it ends or
dies. Everything is written into a temporary folder inside --output_dir and
moved into place at the end (replace_outputs), so an interrupted or failed
run leaves the previous output. A folder that holds other files and no
FlowIO report is not FlowIO's output: it is refused unless --overwrite.
"""
import contextlib
import json
import os
import shutil
import tempfile

import tensorflow as tf

from suite.data.contract import DATASET_FILE, LABELS_FILE, SHARD_NAME, SPLITS
from suite.plumbing.errors import UserError
from suite.plumbing.files import atomic_write_json, folder_lock
from suite.plumbing.names import display_name, some

LOCK_FILE = ".flowio.lock"               # flock()ed by the run writing the folder
JOURNAL_FILE = ".flowio-replacing.json"  # what a run is swapping in and out (see replace_outputs)
TEMPORARY_PREFIXES = (".flowio-tmp-", ".flowio-probe-")  # a run's own, removed when it ends


def _is_bookkeeping(name):
    """FlowIO's own hidden files in --output_dir: the lock, the journal and
    the temporaries of a run."""
    return name in (LOCK_FILE, JOURNAL_FILE) or name.startswith(TEMPORARY_PREFIXES)


def cannot_write(output_dir, error):
    """The one-line UserError for a failed write (read-only, full, gone)."""
    if isinstance(error, tf.errors.OpError):
        reason = error.message.splitlines()[0] if error.message else type(error).__name__
    else:
        reason = error.strerror or str(error)
    return UserError(f"cannot write to --output_dir {display_name(output_dir)}: {reason}; "
                     f"choose a writable folder with free space (nothing there was replaced)")


def check_writable(output_dir):
    try:
        probe = tempfile.NamedTemporaryFile(dir=output_dir, prefix=TEMPORARY_PREFIXES[1])
        probe.close()
    except OSError as error:
        raise cannot_write(output_dir, error)


def lock(output_dir):
    """Holds the run's lock on output_dir (created if need be); a second run
    into the same folder gets a one-line refusal naming the first."""
    return folder_lock(
        output_dir, LOCK_FILE, "FlowIO.py",
        held=lambda holder: UserError(f"{holder} is writing to --output_dir "
                                      f"{display_name(output_dir)}: wait for it to finish, "
                                      f"or choose another folder"),
        cannot_write=lambda error: cannot_write(output_dir, error))


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
                                          or SHARD_NAME.match(name)) for name in names):
        return None
    return set(names)


def previous_outputs(output_dir, overwrite=False):
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
        raise cannot_write(output_dir, error)
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
               f"it holds files FlowIO.py did not write ({some(names)})")
        raise UserError(
            f"--output_dir {display_name(output_dir)} is not empty and not FlowIO.py's "
            f"output: {why}; choose an empty or new folder, or add --overwrite to write "
            f"there anyway (it replaces only files named as FlowIO.py's: {LABELS_FILE}, "
            f"{DATASET_FILE}, train-/validation-NNNNN-of-NNNNN.tfrecord)")
    return owned


def replace_outputs(new_dir, output_dir, names, previous):
    """Moves the finished files in, and removes the rest of the previous
    output: only files FlowIO wrote (previous), never anything else.

    dataset.json goes first out and last in: readers need it, so a run killed
    while files are swapped leaves an output that asks to be rebuilt rather
    than a mix of old and new shards. The journal, in place before anything
    moves, lists both the old and the new files, so the run that rebuilds it
    still knows which files are FlowIO's.
    """
    new = names + [LABELS_FILE, DATASET_FILE]
    atomic_write_json(os.path.join(output_dir, JOURNAL_FILE),
                      {"files": sorted(previous | set(new))})
    leaving = sorted(previous - set(new))
    for name in ([DATASET_FILE] if DATASET_FILE in previous else []) + leaving:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, name))
    for name in new:
        os.replace(os.path.join(new_dir, name), os.path.join(output_dir, name))
    os.remove(os.path.join(output_dir, JOURNAL_FILE))


def remove_stale_temporaries(output_dir):
    """Temporary folders of runs that were killed before they finished. Called
    only while holding the lock: a run still alive would hold it, so every
    temporary folder found then is a dead run's."""
    for name in os.listdir(output_dir):
        if name.startswith(TEMPORARY_PREFIXES):
            path = os.path.join(output_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
