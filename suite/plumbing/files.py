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
import tempfile


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
def exclusive_lock(path, who, wait=False, on_wait=None):
    """Holds an exclusive flock() on the file at path (created if need be),
    which then says "WHO (pid N)" (who: the script, e.g. "FlowIO.py").

    Without wait, a lock held by another process raises LockHeld naming the
    holder at once; with wait, on_wait(holder) is called once and the lock is
    waited for. Opening or locking the file raises OSError (a read-only or
    network folder). The file stays when the lock ends: deleting it would let
    a third process lock a fresh file while a second holds the old one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockHeld(_read_holder(fd)) from None
            if on_wait is not None:
                on_wait(_read_holder(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who} (pid {os.getpid()})\n".encode("utf-8"), 0)
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder, name, who, held, cannot_write):
    """Holds exclusive_lock on folder/name (the folder created if need be) for
    the one process that may write folder. held(holder) and
    cannot_write(error) make the exceptions that refuse a second writer and a
    folder that cannot be written; raised only for taking the lock, never for
    what the caller does while holding it."""
    lock = contextlib.ExitStack()
    try:
        os.makedirs(folder, exist_ok=True)
        lock.enter_context(exclusive_lock(os.path.join(folder, name), who))
    except LockHeld as holder:
        raise held(str(holder)) from None
    except OSError as error:
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
