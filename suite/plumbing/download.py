"""A bounded, resumable HTTP download with the standard library (urllib).

download(url, path) writes through path + ".part": what an interrupted
download left there is resumed with an HTTP Range request. Nothing a source
does can hold a download forever or fill the disk (Limits): every socket
operation has a timeout, every window of time must bring a minimum
throughput, the whole download has a deadline and the body a size cap. A
file:// URL must name a regular file (a named pipe would block, a device
never end). The .part file is never written through a link. Ctrl-C raises
Interrupted, once, and the .part file is kept for the next run.

What fails on our side (the disk) is a CannotWrite, and a .part name taken
by something else a NotAPartFile; what the download stops on purpose is a
Refused. All are told apart from the network's errors (OSError,
http.client.HTTPException, and ValueError for a malformed URL), which the
caller explains. A user:password in a URL is sent as HTTP Basic
authentication and never shown: messages show the URL as shown() does.
"""
import base64
import contextlib
import dataclasses
import http.client
import os
import signal
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.response
from email.message import Message

from suite.plumbing.files import NotRegularFile, file_kind, open_regular_file
from suite.plumbing.progress import Progress

SOCKET_TIMEOUT = 30  # seconds a connection or a read may take before it fails
CHUNK = 1 << 20
# A drip (a byte a second, each read well within SOCKET_TIMEOUT) must fail in
# about a minute, a slow but honest link must not: every RATE_WINDOW_SECS must
# bring MIN_BYTES_PER_SEC on average. A minute rides out a stall (a Wi-Fi
# handover, a congested moment); 10 kB/s is slower than any link anyone
# downloads a 100-250 MB file over, and ten thousand times a drip.
MIN_BYTES_PER_SEC = 10_000
RATE_WINDOW_SECS = 60
# However it goes, a download stops after this, so that nothing runs
# unattended forever; what arrived is kept and the next run resumes it. Four
# hours bring 250 MB at 17 kB/s.
DEADLINE_SECS = 4 * 3600


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a download may take: max_bytes of body (None: no cap; the caller
    knows how large its file can be), deadline seconds in all, at least
    min_rate bytes a second over every window seconds, and answer_within
    seconds for the server's status line and headers."""
    max_bytes: int | None = None
    deadline: float = DEADLINE_SECS
    min_rate: float = MIN_BYTES_PER_SEC
    window: float = RATE_WINDOW_SECS
    answer_within: float = RATE_WINDOW_SECS


class CannotWrite(Exception):
    """Writing `path` failed with `error` (an OSError): a full or read-only disk."""

    def __init__(self, path, error):
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


class NotAPartFile(Exception):
    """The .part file's name is taken by a link or something not a file:
    never written through, never removed (it is not ours). str() is the
    whole message, naming it and the fix."""


class Refused(Exception):
    """The download was stopped on purpose: too slow, too long, larger than
    the file can be, or not from a regular file. str() says why."""


class Interrupted(Exception):
    """Ctrl-C stopped the download (see ctrl_c_stops)."""


def shown(url):
    """url as a message may show it: a user:password (or token) in it is
    replaced by ***."""
    scheme, separator, rest = url.partition("://")
    ends = [index for index in map(rest.find, "/?#") if index >= 0]
    authority, path = rest[:min(ends, default=len(rest))], rest[min(ends, default=len(rest)):]
    userinfo, at, host = authority.rpartition("@")
    return f"{scheme}://***@{host}{path}" if separator and at else url


@contextlib.contextmanager
def ctrl_c_stops():
    """Within it, Ctrl-C (SIGINT) raises Interrupted, once: SIGINT is ignored
    from then on, since the process is stopping and a second Ctrl-C must not
    break its cleanup with a traceback. Outside the main thread, where Python
    cannot handle signals, it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def stop(signum, frame):
        if stopping:  # a second SIGINT, delivered before the first was handled
            return
        stopping.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Interrupted()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        # Not once stopping (nor when an inner ctrl_c_stops has stopped):
        # SIGINT stays ignored.
        if signal.getsignal(signal.SIGINT) is stop:
            signal.signal(signal.SIGINT, previous)


def download(url, path, timeout=SOCKET_TIMEOUT, out=None, limits=Limits()):
    """url -> path, through path + ".part": what an interrupted download left
    there is resumed with an HTTP Range request (appended to on 206 Partial
    Content; a server that answers 200 sends it all again, so the file
    restarts). Network errors are the caller's to explain; the .part file is
    kept for the next try, unless it grew past limits.max_bytes (then it is
    not the file, and removed). A failure to write raises CannotWrite; a
    download stopped by limits, Refused; Ctrl-C, Interrupted."""
    with ctrl_c_stops():
        _download(url, path, timeout, out or sys.stdout, limits,
                  time.monotonic() + limits.deadline)


def _download(url, path, timeout, out, limits, stop_at):
    partial = path + ".part"
    have = _part_size(partial, limits.max_bytes)
    try:
        with _answered_within(limits.answer_within):
            response = _open(url, {"Range": f"bytes={have}-"} if have else {}, timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: the range starts at or after the end
            raise
        if content_range(error.headers.get("Content-Range"))[2] == have:
            replace(partial, path)  # the last run was stopped just before this
            return
        remove(partial)  # longer than the file: not the file; start again
        return _download(url, path, timeout, out, limits, stop_at)
    start, _, total = content_range(response.headers.get("Content-Range"))
    partial_content = getattr(response, "status", None) == 206
    if partial_content and start != have:  # not the range asked for
        response.close()
        if not have:
            raise http.client.HTTPException(f"the server sent bytes from {start} on, unasked")
        remove(partial)  # start again
        return _download(url, path, timeout, out, limits, stop_at)
    with response:
        if not partial_content:  # the whole file (a server without ranges, or a file:// URL)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if limits.max_bytes is not None and total is not None and total > limits.max_bytes:
            remove(partial)  # from a source that is wrong about this file
            raise Refused(f"it is {total:,} bytes, more than the {limits.max_bytes:,} "
                          f"the file can be")
        have = _receive(response, path, partial_content, have, total, url, out,
                        _Pace(limits, stop_at))
    if total is not None and have != total:
        # http.client returns what arrived when a connection closes early.
        raise http.client.IncompleteRead(b"", total - have)
    replace(partial, path)


@contextlib.contextmanager
def _answered_within(seconds):
    """Refused unless the server has answered (status line and headers) within
    seconds: a server that drips its headers, each byte within the socket's
    timeout, would otherwise hold the download forever, before the body's
    rate rule starts. A timer signal interrupts the blocked read, so this
    works in the main thread only (elsewhere the socket timeout alone holds)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def too_slow(signum, frame):
        raise Refused(f"it did not answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _part_size(partial, max_bytes):
    """The length of what an earlier run left in the .part file (0 if none,
    or if it is longer than the file can be: then it is removed). A link or
    anything but a regular file there is refused, never followed."""
    try:
        info = os.lstat(partial)
    except FileNotFoundError:
        return 0
    except OSError as error:
        raise CannotWrite(partial, error)
    if not stat.S_ISREG(info.st_mode):
        what = (f"a symbolic link (to {os.readlink(partial)})" if stat.S_ISLNK(info.st_mode)
                else file_kind(info.st_mode))
        raise NotAPartFile(f"{partial} is {what}, not a download in progress: a download "
                           f"never writes through it; remove it, then run again")
    if max_bytes is not None and info.st_size > max_bytes:
        remove(partial)
        return 0
    return info.st_size


def _receive(response, path, resume, have, total, url, out, pace):
    """Appends (resume) or writes afresh the response's body to path's .part
    file, with a progress line, within the pace's limits; returns the .part
    file's length then."""
    partial = path + ".part"
    resuming = f", resuming at {have / 1e6:.1f} MB" if have else ""
    print(f"downloading {shown(url)} to {path}{resuming}", file=out, flush=True)
    progress = Progress(total, _megabytes(total), out=out, every=10**7, start=have)
    progress.update(have)
    # read1: what has arrived, at most CHUNK; read() would wait for all of it.
    read = getattr(response, "read1", response.read)
    cap = pace.limits.max_bytes
    try:
        with open_part(partial, resume) as f:
            while chunk := read(CHUNK if cap is None else min(CHUNK, cap + 1 - have)):
                write(f, chunk, partial)
                have += len(chunk)
                progress.update(have)
                if cap is not None and have > cap:
                    break
                pace.check(len(chunk))
    finally:
        progress.finish(have)  # on a terminal: ends the line before any message
    if cap is not None and have > cap:
        remove(partial)  # not the file: nothing a later run could resume
        raise Refused(f"it sent more than the {cap:,} bytes the file can be")
    return have


class _Pace:
    """The limits' deadline and minimum throughput, checked as bytes arrive."""

    def __init__(self, limits, stop_at):
        self.limits, self.stop_at = limits, stop_at
        self.window_start, self.window_bytes = time.monotonic(), 0

    def check(self, received):
        """Raises Refused when the deadline has passed, or when the window just
        ended brought less than the minimum rate."""
        now = time.monotonic()
        if now > self.stop_at:
            raise Refused(f"it did not finish within the {self.limits.deadline:g} s a "
                          f"download may take")
        self.window_bytes += received
        elapsed = now - self.window_start
        if elapsed >= self.limits.window:
            rate = self.window_bytes / elapsed
            if rate < self.limits.min_rate:
                raise Refused(f"it slowed to {rate:,.0f} bytes/s, under the "
                              f"{self.limits.min_rate:,.0f} bytes/s a download must keep over "
                              f"every {self.limits.window:g} s")
            self.window_start, self.window_bytes = now, 0


def _megabytes(total):
    def describe(have, rate):
        if not total:
            return f"  {have / 1e6:.1f} MB"
        return f"  {have / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * have // total}%)"
    return describe


def content_range(header):
    """"bytes START-END/TOTAL" (or "bytes */TOTAL") -> (start, end, total);
    None for what is absent or unknown."""
    numbers = [None, None, None]
    if header and header.startswith("bytes "):
        span, _, size = header[len("bytes "):].partition("/")
        first, _, last = span.partition("-")
        for index, text in enumerate((first, last, size)):
            if text.strip().isdigit():
                numbers[index] = int(text)
    return tuple(numbers)


# ---------------------------------------------------------------------------
# The source: a URL opened with urllib, or a local file
# ---------------------------------------------------------------------------
def _open(url, headers, timeout):
    """The response for url: urllib's, or for a file:// URL a regular file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return _open_local(parts)
    request = urllib.request.Request(parts._replace(netloc=parts.netloc.rpartition("@")[2])
                                     .geturl(), headers=headers)
    if parts.username is not None:
        # Unredirected: a redirect to another server does not carry it.
        credentials = f"{urllib.parse.unquote(parts.username)}:" \
                      f"{urllib.parse.unquote(parts.password or '')}"
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(credentials.encode()).decode("ascii"))
    return urllib.request.urlopen(request, timeout=timeout)


def _open_local(parts):
    """A file:// URL's file, opened as urllib would (the whole file, with its
    Content-Length) but only if it is a regular file: anything else is
    refused from its metadata, before it is opened."""
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file://{parts.netloc}/: a file URL names a file on this machine")
    path = urllib.request.url2pathname(parts.path)
    try:
        source = open_regular_file(path)
    except NotRegularFile as error:
        raise Refused(f"{path} is not a regular file but {error.kind}") from None
    size = os.fstat(source.fileno()).st_size
    headers = Message()
    headers["Content-Length"] = str(size)
    return urllib.response.addinfourl(source, headers, parts.geturl())


# ---------------------------------------------------------------------------
# Our side of it: each failure is a CannotWrite naming the file
# ---------------------------------------------------------------------------
def open_part(path, resume):
    """The .part file, to append to (resume) or created afresh. Never through
    a link (O_NOFOLLOW), and a new one is created O_EXCL, so that nothing
    planted under its name after the check is written to."""
    if resume:
        flags = os.O_WRONLY | os.O_APPEND
    else:
        remove(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.fdopen(os.open(path, flags | os.O_NOFOLLOW, 0o644), "ab" if resume else "wb")
    except OSError as error:
        raise CannotWrite(path, error)


def open_for_writing(path, mode):
    try:
        return open(path, mode)
    except OSError as error:
        raise CannotWrite(path, error)


def write(f, data, path):
    try:
        f.write(data)
    except OSError as error:
        raise CannotWrite(path, error)


def replace(source, target):
    try:
        os.replace(source, target)
    except OSError as error:
        raise CannotWrite(target, error)


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise CannotWrite(path, error)
