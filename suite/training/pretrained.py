"""TF-slim's published ImageNet weights, for train.py --pretrained.

TF-slim (tensorflow/models, research/slim, "Pre-trained Models") publishes
resnet_v1_50/101/152 trained on ImageNet, one tarball each holding one
checkpoint (TensorFlow's V1 single-file format, which TensorFlow still
reads). With shortcut option B our layer_50/101/152 are those networks
variable for variable, named resnet/ where slim says resnet_v1_50/.

fetch() downloads a tarball once into the cache folder, unpacks it and checks
it against our network before train.py loads it:

    cache folder: --pretrained_cache, else $RESNET_PRETRAINED_CACHE, else
                  $XDG_CACHE_HOME/resnet-suite/pretrained, else
                  ~/.cache/resnet-suite/pretrained
      resnet_v1_50_2016_08_28.tar.gz.part        a download in progress; the
                                                 next run resumes it
      resnet_v1_50_2016_08_28.tar.gz             downloaded (or put there by
                                                 hand), unpacked on the next use
      resnet_v1_50_2016_08_28/resnet_v1_50.ckpt  unpacked and checked: what
                                                 train.py loads

The base URL can be changed with $RESNET_PRETRAINED_URL (a mirror, or the
tests' server; a user:password in it is used, never shown). The download is
suite.plumbing.download's, bounded in time and size: nothing larger than the
checkpoint can plausibly be is downloaded or unpacked, and a checkpoint with
NaN or infinite values is refused. A second train.py waits for the one
fetching, for LOCK_WAIT_SECS at most.
"""
import collections
import dataclasses
import functools
import gzip
import http.client
import math
import os
import shutil
import signal
import stat
import sys
import tarfile
import tempfile
import urllib.error
import zlib

import numpy as np
import tensorflow as tf

import resnet
from suite.plumbing import download as downloading
from suite.plumbing.download import CannotWrite
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import LockHeld, exclusive_lock, file_kind
from suite.preprocessing.normalization import MEAN_RGB

# Our network -> the variable scope of TF-slim's network and checkpoint file.
PUBLISHED = {"layer_50": "resnet_v1_50", "layer_101": "resnet_v1_101",
             "layer_152": "resnet_v1_152"}
RELEASE = "2016_08_28"  # the date in the tarballs' names
BASE_URL = "http://download.tensorflow.org/models/"  # TF-slim's README table
URL_VARIABLE = "RESNET_PRETRAINED_URL"
CACHE_VARIABLE = "RESNET_PRETRAINED_CACHE"
PROJECT = "resnet-suite"  # the cache's folder under ~/.cache
# The checkpoints were trained with slim's VGG preprocessing: 0..255 RGB minus
# ImageNet's mean (its _R_MEAN, _G_MEAN, _B_MEAN, the same as ours), not
# divided by a standard deviation. model.json records it
# (suite.preprocessing.normalization).
NORMALIZATION = {"mean_rgb": MEAN_RGB, "std_rgb": (1.0, 1.0, 1.0)}
# The largest a published checkpoint, or its tarball, can plausibly be: 4
# bytes for each value of the network's variables and of ImageNet's logits
# (up to 1,001 classes from 2,048 features), plus a tenth and a MiB for the
# formats (a V1 checkpoint adds under 0.1%, tar's headers kilobytes; gzip
# does not grow float data). resnet_v1_50: 113 MB for its 95 MB tarball. A
# larger download or unpacked member is refused before it fills a disk.
IMAGENET_LOGITS = 1001 * (2048 + 1)
SIZE_MARGIN = 1.1
# How long a second train.py waits for the one fetching into the same cache
# (a cluster's workers on one machine, or two runs): long enough for
# resnet_v1_152's 230 MB at 0.4 MB/s, short enough that a holder that is
# stuck is reported, naming it, while the user still watches.
LOCK_WAIT_SECS = 10 * 60


def release(model):
    """The name of a published checkpoint, e.g. "resnet_v1_50_2016_08_28"."""
    return f"{PUBLISHED[model]}_{RELEASE}"


def cache_dir(override=None):
    """The folder the checkpoints are kept in (see the module's docstring)."""
    if override:
        return override
    if os.environ.get(CACHE_VARIABLE):
        return os.environ[CACHE_VARIABLE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, PROJECT, "pretrained")


Paths = collections.namedtuple("Paths", "url tarball partial folder checkpoint")


def paths(model, cache=None, base_url=None):
    """Where the published checkpoint for model comes from and goes."""
    name, folder = release(model), cache_dir(cache)
    base = base_url or os.environ.get(URL_VARIABLE) or BASE_URL
    tarball = os.path.join(folder, name + ".tar.gz")
    return Paths(url=base.rstrip("/") + "/" + name + ".tar.gz", tarball=tarball,
                 partial=tarball + ".part", folder=os.path.join(folder, name),
                 checkpoint=os.path.join(folder, name, PUBLISHED[model] + ".ckpt"))


def fetch(model, cache=None, base_url=None, timeout=downloading.SOCKET_TIMEOUT, out=None,
          limits=None, lock_wait=LOCK_WAIT_SECS):
    """The path of the checked checkpoint of TF-slim's network for model
    (layer_50/101/152), downloaded and unpacked first if it is not in the
    cache. Every problem is one UserError line: no network (naming the URL
    and where to put the file by hand), a file that is not the checkpoint
    (removed, so it is not taken for a good one), a cache that cannot be
    written, another process fetching for over lock_wait seconds. limits:
    the download's (suite.plumbing.download.Limits); its max_bytes, by
    default largest_plausible_size(model), also bounds the unpacking. Ctrl-C
    ends the process with one line and exit code 130 (128 + SIGINT, as a
    shell reports it), what arrived kept for the next run."""
    if model not in PUBLISHED:
        raise UserError(f"TF-slim publishes ImageNet weights for {', '.join(PUBLISHED)} "
                        f"only, not {model}")
    where = paths(model, cache, base_url)
    try:
        with downloading.ctrl_c_stops():
            _fetch(where, model, timeout, out or sys.stdout, limits, lock_wait)
    except downloading.Interrupted:
        print(f"stopped (Ctrl-C) fetching {downloading.shown(where.url)}{_kept(where)}",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGINT) from None
    return where.checkpoint


def _fetch(where, model, timeout, out, limits, lock_wait):
    """fetch()'s work, in the cache's lock."""
    try:
        os.makedirs(os.path.dirname(where.tarball), exist_ok=True)
        with _lock(where, out, lock_wait):
            if os.path.exists(where.checkpoint) and _cached_is_good(where, model, out):
                return
            limits = limits or downloading.Limits()
            if limits.max_bytes is None:
                limits = dataclasses.replace(limits, max_bytes=largest_plausible_size(model))
            if not os.path.exists(where.tarball):
                try:
                    downloading.download(where.url, where.tarball, timeout, out, limits)
                except (OSError, ValueError, http.client.HTTPException,
                        downloading.Refused) as error:
                    raise _no_download(where, error) from None
            _unpack(where, model, limits.max_bytes)
    except LockHeld as holder:
        raise UserError(f"{holder} is still fetching {os.path.basename(where.tarball)} into "
                        f"{os.path.dirname(where.tarball)} after {lock_wait:g} s of waiting "
                        f"(it holds {where.tarball}.lock): let it finish or stop it, then "
                        f"run again") from None
    except downloading.NotAPartFile as error:
        raise UserError(str(error)) from None
    except CannotWrite as error:
        raise _cannot_write(error.path, error.error) from None
    except OSError as error:  # the cache folder or its lock
        raise _cannot_write(os.path.dirname(where.tarball), error) from None


def largest_plausible_size(model):
    """The most bytes TF-slim's checkpoint for model, or its tarball, can
    plausibly be (see SIZE_MARGIN)."""
    values = sum(math.prod(shape) for shape in expected_shapes(model).values())
    return int(4 * (values + IMAGENET_LOGITS) * SIZE_MARGIN) + 2**20


# ---------------------------------------------------------------------------
# When the download fails
# ---------------------------------------------------------------------------
def _no_download(where, error):
    """The one line for a download that failed: the URL, why, and where the
    file can be put by hand."""
    if isinstance(error, downloading.Refused):
        why = str(error)
    elif isinstance(error, urllib.error.HTTPError):
        why = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        why = getattr(error.reason, "strerror", None) or str(error.reason)
    elif isinstance(error, http.client.IncompleteRead):
        why = f"the connection closed {error.expected} bytes before the end"
    else:
        why = reason(error) or type(error).__name__
    return UserError(f"cannot download {downloading.shown(where.url)} ({why}){_kept(where)}. "
                     f"To install it by hand, "
                     f"download it on a machine with network and put it at {where.tarball} "
                     f"(or its unpacked {os.path.basename(where.checkpoint)} at "
                     f"{where.checkpoint}), then run again")


def _kept(where):
    """What the message says of the .part file an interrupted download left."""
    if not os.path.isfile(where.partial) or os.path.islink(where.partial):
        return ""
    return (f"; the {os.path.getsize(where.partial):,} bytes received are kept in "
            f"{where.partial} and the next run resumes there")


# ---------------------------------------------------------------------------
# Unpack and check
# ---------------------------------------------------------------------------
def _unpack(where, model, max_bytes):
    """The tarball's checkpoint into a temporary folder, checked, then renamed
    to its place; the tarball is removed then, or when it holds no good
    checkpoint (so it is downloaded afresh next time). Nothing past
    max_bytes is unpacked."""
    member_name = os.path.basename(where.checkpoint)
    cache = os.path.dirname(where.tarball)
    try:
        temporary = tempfile.mkdtemp(prefix=".unpacking-", dir=cache)
    except OSError as error:
        raise _cannot_write(cache, error)
    try:
        target = os.path.join(temporary, member_name)
        problem = _extract(where.tarball, member_name, target, max_bytes)
        if problem is None:
            problem = checkpoint_problem(target, model)
        if problem:
            downloading.remove(where.tarball)
            raise UserError(f"{where.tarball} (from {downloading.shown(where.url)}) is not "
                            f"TF-slim's {release(model)} ({problem}); removed it: run again "
                            f"to download it afresh, or put the right file there by hand")
        try:
            if os.path.isdir(where.folder):  # without the checkpoint: left by hand, stale
                shutil.rmtree(where.folder)
            os.rename(temporary, where.folder)
        except OSError as error:
            raise _cannot_write(where.folder, error)
        downloading.remove(where.tarball)  # the checkpoint holds all of it
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


class _TooLarge(Exception):
    """The archive unpacks to more than it may."""


class _Capped:
    """A file read, and sought, no further than max_bytes: what tarfile
    reads of an archive's unpacked stream (its headers too, which it holds in
    memory whole), so that a gzip bomb stops at the cap (_TooLarge)."""

    def __init__(self, f, max_bytes):
        self.f, self.max_bytes = f, max_bytes

    def read(self, size=-1):
        room = self.max_bytes - self.f.tell()
        data = self.f.read(room + 1 if size < 0 else min(size, room + 1))
        if len(data) > room:
            raise _TooLarge()
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        target = offset + (self.f.tell() if whence == os.SEEK_CUR else 0)
        if whence == os.SEEK_END or target > self.max_bytes:
            raise _TooLarge()
        return self.f.seek(target)

    def tell(self):
        return self.f.tell()


def _extract(tarball, member_name, target, max_bytes):
    """Copies the tarball's member_name (a regular file; nothing else of the
    archive is written anywhere) to target; returns why it cannot, or None.
    Read as a stream: the archive is decompressed once, and no further than
    max_bytes (a member that says it is larger is refused from its header,
    before a byte of it is written)."""
    too_large = (f"it unpacks to more than {max_bytes:,} bytes, more than the checkpoint "
                 f"can plausibly be")
    try:
        mode = os.stat(tarball).st_mode
        if not stat.S_ISREG(mode):  # a named pipe would block its reader, a device never end
            return f"not a regular file but {file_kind(mode)}"
        with gzip.open(tarball) as unpacked, \
                tarfile.open(fileobj=_Capped(unpacked, max_bytes), mode="r:") as archive:
            for member in archive:
                if member.size > max_bytes:
                    return f"{too_large} ({member.name}: {member.size:,} bytes)"
                if member.name.removeprefix("./") == member_name and member.isfile():
                    source = archive.extractfile(member)
                    with downloading.open_for_writing(target, "wb") as f:
                        while chunk := source.read(downloading.CHUNK):
                            downloading.write(f, chunk, target)
                    return None
    except _TooLarge:
        return too_large
    # OSError: reading, e.g. gzip.BadGzipFile (a failed write is a UserError)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        return f"not a readable .tar.gz: {reason(error)}"
    return f"it holds no file {member_name}"


def _cached_is_good(where, model, out):
    """The cached checkpoint (unpacked by an earlier run, or put there by
    hand) is checked at every use; a wrong one is removed, with its folder,
    saying so, and fetched afresh."""
    problem = checkpoint_problem(where.checkpoint, model)
    if problem:
        shutil.rmtree(where.folder, ignore_errors=True)
        print(f"{where.checkpoint} is not TF-slim's {release(model)} checkpoint ({problem}); "
              f"removed it, fetching it afresh", file=out, flush=True)
    return not problem


def checkpoint_problem(path, model):
    """Why the checkpoint at path is not TF-slim's network for model, or None:
    it must hold every variable our network with shortcut B creates (named
    resnet_v1_N/ where ours say resnet/), with the same shape, and finite
    values (NaN would make training's first loss NaN); the logits are not
    compared (fine-tuning replaces them: train.py's --exclude_scopes)."""
    try:
        reader = tf.train.load_checkpoint(path)
        stored = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        return f"TensorFlow cannot read it as a checkpoint: {reason(error)}"
    expected = expected_shapes(model)
    missing = [name for name in expected if name not in stored]
    if missing:
        return (f"it lacks {len(missing)} of the {len(expected)} variables of "
                f"{PUBLISHED[model]}, e.g. {missing[0]}")
    wrong = [name for name in expected if stored[name] != expected[name]]
    if wrong:
        more = f", and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        return (f"{wrong[0]} is {stored[wrong[0]]} there but {expected[wrong[0]]} in "
                f"{PUBLISHED[model]}{more}")
    return _values_problem(reader, expected)


def _values_problem(reader, names):
    """Which of the checkpoint's variables hold NaN or infinite values, in
    words, or None."""
    not_finite = {}  # name: how many of its values
    try:
        for name in names:
            values = reader.get_tensor(name)
            count = values.size - np.count_nonzero(np.isfinite(values))
            if count:
                not_finite[name] = int(count)
    except (tf.errors.OpError, ValueError) as error:
        return f"TensorFlow cannot read its values: {reason(error)}"
    if not not_finite:
        return None
    first, count = next(iter(not_finite.items()))
    more = f", and {len(not_finite) - 1} more variables do" if len(not_finite) > 1 else ""
    return f"{first} holds {count:,} NaN or infinite values{more}"


@functools.lru_cache(maxsize=None)
def expected_shapes(model):
    """{TF-slim's name: shape} of the variables resnet.build creates for model
    with shortcut B, the logits left out."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3])  # any size: same variables
        resnet.build(images, model, 2, is_train=False, shortcut="B")
        variables = tf.compat.v1.global_variables()
    return {PUBLISHED[model] + v.op.name[len("resnet"):]: v.shape.as_list()
            for v in variables if not v.op.name.startswith("resnet/logits/")}


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def _lock(where, out, lock_wait):
    """One process at a time downloads and unpacks a checkpoint (two would
    append to one .part file); another waits for it, saying so, for
    lock_wait seconds at most (then LockHeld names the holder)."""
    def waiting(holder):
        print(f"waiting for {holder}, which is fetching "
              f"{os.path.basename(where.tarball)} into {os.path.dirname(where.tarball)}",
              file=out, flush=True)
    return exclusive_lock(where.tarball + ".lock", "train.py --pretrained", wait=True,
                          on_wait=waiting, timeout=lock_wait)


def _cannot_write(path, error):
    return UserError(f"cannot write {path} ({reason(error)}): free some space, fix its "
                     f"permissions or choose another folder with --pretrained_cache "
                     f"or ${CACHE_VARIABLE}")
