"""Writing files safely: one atomic write, and one lock.

atomic_write() writes a file whole or not at all: a reader (or a run killed
halfway) never sees half of it. exclusive_lock() lets one process at a time
write a folder; it is an OS lock (flock), so it ends with its process and a
killed run never blocks the next one. Its file says who holds it, in one
format: "WHO (pid N)", e.g. "train.py (pid 4242)".
"""
import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time

from suite.plumbing import signals
from suite.plumbing.errors import UserError


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISDIR, "a folder"))


def file_kind(mode):
    """What a file that is not a regular one is, in words ("a named pipe"),
    from its st_mode: said instead of opening it (opening a pipe blocks until
    someone writes, and a device's data need not end)."""
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a regular file")


class NotRegularFile(OSError):
    """A path that is not a regular file; .kind says what it is ("a named pipe")."""

    def __init__(self, kind):
        super().__init__(0, f"{kind}, not a file")
        self.kind = kind


def open_regular_file(path):
    """path (or the file a link names) opened for binary reading, only if it
    is a regular file: anything else is refused from its metadata, before it
    is opened and again from the open descriptor, should the path have
    changed in between. O_NONBLOCK, so that a path that became a named pipe
    is never waited on. Raises NotRegularFile or OSError."""
    _require_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        _require_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(mode):
    if not stat.S_ISREG(mode):
        raise NotRegularFile(file_kind(mode))


def atomic_write(path, data):
    """Writes data (bytes or str, UTF-8) to path through a new temporary file
    in the same folder, renamed over path when complete. The temporary file
    is created afresh (O_EXCL), so a file or link already lying under its
    name is never written through. Raises OSError; nothing is left behind."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other readers
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def atomic_write_json(path, record, **dump_options):
    """atomic_write of record as JSON text (UTF-8, non-ASCII kept as is)."""
    atomic_write(path, json.dumps(record, ensure_ascii=False, **dump_options))


@contextlib.contextmanager
def temporary_folder(prefix):
    """A new folder in tempfile's temporary folder, removed with what it
    holds when the block ends, however it ends. Unlike
    tempfile.TemporaryDirectory, a stop signal that lands just after the
    folder is made cannot leave it behind: it is raised only once the
    removal is in charge (signals.deferred)."""
    folder = None
    try:
        with signals.deferred():
            folder = tempfile.mkdtemp(prefix=prefix)
        yield folder
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


class LockHeld(Exception):
    """Another process holds the lock; str() is who, as its lock file says."""


# The descriptors of the locks this process holds (see close_inherited_locks).
_HELD = set()


def _read_holder(fd):
    """Who holds the lock, as its file says ("another process" when it says
    nothing; a bare number is how earlier versions wrote their pid)."""
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    if text.isdigit():
        return f"process {text}"
    return text or "another process"


@contextlib.contextmanager
def exclusive_lock(path, who, wait=False, on_wait=None, timeout=None):
    """Holds an exclusive flock() on the file at path (created if need be),
    which then says "WHO (pid N)" (who: the script, e.g. "FlowIO.py").

    Without wait, a lock held by another process raises LockHeld naming the
    holder at once; with wait, on_wait(holder) is called once and the lock is
    waited for, at most timeout seconds (None: as long as it takes), after
    which LockHeld names the holder then: a holder that is stuck is reported
    instead of blocking its waiters forever. Opening or locking the file
    raises OSError (a read-only or network folder). The file stays when the
    lock ends: deleting it would let a third process lock a fresh file while
    a second holds the old one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        if not _locked_now(fd):
            if not wait:
                raise LockHeld(_read_holder(fd))
            if on_wait is not None:
                on_wait(_read_holder(fd))
            _wait_for_lock(fd, timeout)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who} (pid {os.getpid()})\n".encode("utf-8"), 0)
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)


LOCK_POLL_SECS = 0.2  # how often a bounded wait for a lock tries it again


def _locked_now(fd):
    """Whether flock(fd) succeeded now, without waiting."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_lock(fd, timeout):
    """flock(fd) once the holder lets go, waiting at most timeout seconds
    (None: as long as it takes; flock has no timeout of its own, so a bounded
    wait tries again every LOCK_POLL_SECS). Raises LockHeld naming the
    holder when the time is up."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while not _locked_now(fd):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockHeld(_read_holder(fd))
        time.sleep(min(LOCK_POLL_SECS, remaining))


@contextlib.contextmanager
def folder_lock(folder, name, who, held, cannot_write):
    """Holds exclusive_lock on folder/name (the folder created if need be) for
    the one process that may write folder. held(holder) and
    cannot_write(error) make the exceptions that refuse a second writer and a
    folder that cannot be written; raised only for taking the lock, never for
    what the caller does while holding it. A symbolic link planted under the
    lock's name (say by another user of a shared folder) is never opened:
    a UserError names it."""
    path = os.path.join(folder, name)
    lock = contextlib.ExitStack()
    try:
        os.makedirs(folder, exist_ok=True)
        lock.enter_context(exclusive_lock(path, who))
    except LockHeld as holder:
        raise held(str(holder)) from None
    except OSError as error:
        if os.path.islink(path):  # O_NOFOLLOW's "Too many levels of symbolic links"
            raise UserError(f"{path} is a symbolic link, which {who} does not write "
                            f"through (nothing was written): remove it and run again") from None
        raise cannot_write(error) from None
    with lock:
        yield


def close_inherited_locks():
    """In a forked worker process: close its copies of the parent's locks, so
    that each lock ends with the parent even if a worker outlives it."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()
