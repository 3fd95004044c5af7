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
tests' server). The download is suite.plumbing.download's.
"""
import collections
import functools
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import zlib

import tensorflow as tf

import resnet
from suite.plumbing import download as downloading
from suite.plumbing.download import CannotWrite
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import exclusive_lock
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


def fetch(model, cache=None, base_url=None, timeout=downloading.SOCKET_TIMEOUT, out=None):
    """The path of the checked checkpoint of TF-slim's network for model
    (layer_50/101/152), downloaded and unpacked first if it is not in the
    cache. Every problem is one UserError line: no network (naming the URL
    and where to put the file by hand), a file that is not the checkpoint
    (removed, so it is not taken for a good one), a cache that cannot be
    written."""
    if model not in PUBLISHED:
        raise UserError(f"TF-slim publishes ImageNet weights for {', '.join(PUBLISHED)} "
                        f"only, not {model}")
    where = paths(model, cache, base_url)
    out = out or sys.stdout
    try:
        os.makedirs(os.path.dirname(where.tarball), exist_ok=True)
        with _lock(where, out):
            if os.path.exists(where.checkpoint):
                _check_cached(where, model)
                return where.checkpoint
            if not os.path.exists(where.tarball):
                try:
                    downloading.download(where.url, where.tarball, timeout, out)
                except (OSError, ValueError, http.client.HTTPException) as error:
                    raise _no_download(where, error) from None
            _unpack(where, model)
    except CannotWrite as error:
        raise _cannot_write(error.path, error.error) from None
    except OSError as error:  # the cache folder or its lock
        raise _cannot_write(os.path.dirname(where.tarball), error) from None
    return where.checkpoint


# ---------------------------------------------------------------------------
# When the download fails
# ---------------------------------------------------------------------------
def _no_download(where, error):
    """The one line for a download that failed: the URL, why, and where the
    file can be put by hand."""
    if isinstance(error, urllib.error.HTTPError):
        why = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        why = getattr(error.reason, "strerror", None) or str(error.reason)
    elif isinstance(error, http.client.IncompleteRead):
        why = f"the connection closed {error.expected} bytes before the end"
    else:
        why = reason(error) or type(error).__name__
    kept = (f"; the {os.path.getsize(where.partial):,} bytes received are kept in "
            f"{where.partial} and the next run resumes there"
            if os.path.exists(where.partial) else "")
    return UserError(f"cannot download {where.url} ({why}){kept}. To install it by hand, "
                     f"download it on a machine with network and put it at {where.tarball} "
                     f"(or its unpacked {os.path.basename(where.checkpoint)} at "
                     f"{where.checkpoint}), then run again")


# ---------------------------------------------------------------------------
# Unpack and check
# ---------------------------------------------------------------------------
def _unpack(where, model):
    """The tarball's checkpoint into a temporary folder, checked, then renamed
    to its place; the tarball is removed then, or when it holds no good
    checkpoint (so it is downloaded afresh next time)."""
    member_name = os.path.basename(where.checkpoint)
    cache = os.path.dirname(where.tarball)
    try:
        temporary = tempfile.mkdtemp(prefix=".unpacking-", dir=cache)
    except OSError as error:
        raise _cannot_write(cache, error)
    try:
        target = os.path.join(temporary, member_name)
        problem = _extract(where.tarball, member_name, target)
        if problem is None:
            problem = checkpoint_problem(target, model)
        if problem:
            downloading.remove(where.tarball)
            raise UserError(f"{where.tarball} (from {where.url}) is not TF-slim's "
                            f"{release(model)} ({problem}); removed it: run again to download "
                            f"it afresh, or put the right file there by hand")
        try:
            if os.path.isdir(where.folder):  # without the checkpoint: left by hand, stale
                shutil.rmtree(where.folder)
            os.rename(temporary, where.folder)
        except OSError as error:
            raise _cannot_write(where.folder, error)
        downloading.remove(where.tarball)  # the checkpoint holds all of it
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _extract(tarball, member_name, target):
    """Copies the tarball's member_name (a regular file; nothing else of the
    archive is written anywhere) to target; returns why it cannot, or None.
    Read as a stream: the archive is decompressed once."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.name.removeprefix("./") == member_name and member.isfile():
                    source = archive.extractfile(member)
                    with downloading.open_for_writing(target, "wb") as f:
                        while chunk := source.read(downloading.CHUNK):
                            downloading.write(f, chunk, target)
                    return None
    # OSError: reading, e.g. gzip.BadGzipFile (a failed write is a UserError)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        return f"not a readable .tar.gz: {reason(error)}"
    return f"it holds no file {member_name}"


def _check_cached(where, model):
    """The cached checkpoint (unpacked by an earlier run, or put there by
    hand) is checked at every use; a wrong one is removed, with its folder."""
    problem = checkpoint_problem(where.checkpoint, model)
    if problem:
        shutil.rmtree(where.folder, ignore_errors=True)
        raise UserError(f"{where.checkpoint} is not TF-slim's {release(model)} checkpoint "
                        f"({problem}); removed it: run again to download {where.url}, or put "
                        f"the right file there by hand")


def checkpoint_problem(path, model):
    """Why the checkpoint at path is not TF-slim's network for model, or None:
    it must hold every variable our network with shortcut B creates (named
    resnet_v1_N/ where ours say resnet/), with the same shape; the logits are
    not compared (fine-tuning replaces them: train.py's --exclude_scopes)."""
    try:
        stored = tf.train.load_checkpoint(path).get_variable_to_shape_map()
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
    return None


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
def _lock(where, out):
    """One process at a time downloads and unpacks a checkpoint (two would
    append to one .part file); another waits for it, saying so."""
    def waiting(holder):
        print(f"waiting for {holder}, which is fetching "
              f"{os.path.basename(where.tarball)} into {os.path.dirname(where.tarball)}",
              file=out, flush=True)
    return exclusive_lock(where.tarball + ".lock", "train.py --pretrained", wait=True,
                          on_wait=waiting)


def _cannot_write(path, error):
    return UserError(f"cannot write {path} ({reason(error)}): free some space, fix its "
                     f"permissions or choose another folder with --pretrained_cache "
                     f"or ${CACHE_VARIABLE}")
