"""A resumable HTTP download with the standard library (urllib).

download(url, path) writes through path + ".part": what an interrupted
download left there is resumed with an HTTP Range request. Every socket
operation has a timeout, so a network that does not answer is an error,
never a hang. What fails on our side (the disk) is a CannotWrite, told
apart from the network's errors (OSError, http.client.HTTPException, and
ValueError for a malformed URL), which the caller explains.
"""
import http.client
import os
import sys
import urllib.error
import urllib.request

from suite.plumbing.progress import Progress

SOCKET_TIMEOUT = 30  # seconds a connection or a read may take before it fails
CHUNK = 1 << 20


class CannotWrite(Exception):
    """Writing `path` failed with `error` (an OSError): a full or read-only disk."""

    def __init__(self, path, error):
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


def download(url, path, timeout=SOCKET_TIMEOUT, out=None):
    """url -> path, through path + ".part": what an interrupted download left
    there is resumed with an HTTP Range request (appended to on 206 Partial
    Content; a server that answers 200 sends it all again, so the file
    restarts). Network errors are the caller's to explain; the .part file is
    kept for the next try. A failure to write raises CannotWrite."""
    out = out or sys.stdout
    partial = path + ".part"
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not have:  # 416: the range starts at or after the end
            raise
        if content_range(error.headers.get("Content-Range"))[2] == have:
            replace(partial, path)  # the last run was stopped just before this
            return
        remove(partial)  # longer than the file: not the file; start again
        return download(url, path, timeout, out)
    start, _, total = content_range(response.headers.get("Content-Range"))
    partial_content = getattr(response, "status", None) == 206
    if partial_content and start != have:  # not the range asked for
        response.close()
        if not have:
            raise http.client.HTTPException(f"the server sent bytes from {start} on, unasked")
        remove(partial)  # start again
        return download(url, path, timeout, out)
    with response:
        if partial_content:
            mode = "ab"
        else:  # the whole file (a server without ranges, or a file:// URL)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        have = _receive(response, path, mode, have, total, url, out)
    if total is not None and have != total:
        # http.client returns what arrived when a connection closes early.
        raise http.client.IncompleteRead(b"", total - have)
    replace(partial, path)


def _receive(response, path, mode, have, total, url, out):
    """Appends (or writes, by mode) the response's body to path's .part file,
    with a progress line; returns the .part file's length then."""
    partial = path + ".part"
    resuming = f", resuming at {have / 1e6:.1f} MB" if have else ""
    print(f"downloading {url} to {path}{resuming}", file=out, flush=True)
    progress = Progress(total, _megabytes(total), out=out, every=10**7, start=have)
    progress.update(have)
    with open_for_writing(partial, mode) as f:
        while chunk := response.read(CHUNK):
            write(f, chunk, partial)
            have += len(chunk)
            progress.update(have)
    progress.finish(have)
    return have


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
# Our side of it: each failure is a CannotWrite naming the file
# ---------------------------------------------------------------------------
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
