"""The resumable download, from a real HTTP server on 127.0.0.1: a partial
file resumed with a Range request, a server without ranges, the progress
line on a terminal; and its bounds: a drip, a body that never ends or is
larger than the file can be, a file:// URL that is a pipe or a device, a
link planted as the .part file, a user:password in the URL."""
import base64
import filecmp
import http.server
import io
import itertools
import os
import re
import shutil
import time

import numpy as np
import pytest

from helpers import http_server, no_hang, serving
from suite.plumbing import download


TARBALL = "resnet_v1_50_2016_08_28.tar.gz"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A folder to serve over HTTP holding TARBALL: 3 MB of random bytes."""
    served = tmp_path_factory.mktemp("published")
    (served / TARBALL).write_bytes(np.random.default_rng(0).bytes(3_000_000))
    return str(served), None


@pytest.fixture()
def server(published):
    """The test server, serving `published`: its base URL is server.url."""
    with serving(published[0]) as httpd:
        yield httpd


def test_a_partial_download_is_resumed_with_a_range_request(server, published, tmp_path):
    served = os.path.join(published[0], TARBALL)
    with open(served, "rb") as f:
        head = f.read(os.path.getsize(served) // 3)
    (tmp_path / "downloads").mkdir()
    target = tmp_path / "downloads" / TARBALL
    (tmp_path / "downloads" / (TARBALL + ".part")).write_bytes(head)
    out = io.StringIO()
    download.download(server.url + TARBALL, str(target), out=out)
    assert server.requests == [("/" + TARBALL, f"bytes={len(head)}-", 206)]
    assert filecmp.cmp(target, served, shallow=False)
    assert os.listdir(tmp_path / "downloads") == [TARBALL]
    assert f"resuming at {len(head) / 1e6:.1f} MB" in out.getvalue()


def test_a_complete_part_is_taken_when_the_server_says_nothing_is_left(server, published,
                                                                     tmp_path):
    served = os.path.join(published[0], TARBALL)
    shutil.copy(served, tmp_path / (TARBALL + ".part"))  # stopped just before the rename
    download.download(server.url + TARBALL, str(tmp_path / TARBALL), out=io.StringIO())
    assert server.requests == [("/" + TARBALL, f"bytes={os.path.getsize(served)}-", 416)]
    assert filecmp.cmp(tmp_path / TARBALL, served, shallow=False)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_one_rewritten_line(server, tmp_path):
    out = Terminal()
    download.download(server.url + TARBALL, str(tmp_path / TARBALL), out=out)
    first, progress, end = out.getvalue().split("\n")
    assert first.startswith("downloading ") and end == ""
    assert progress.startswith("\r  0.0 / ") and progress.endswith("MB (100%)")


def test_a_server_without_ranges_restarts_the_download(server, published, tmp_path):
    server.ranges = False
    target = tmp_path / TARBALL
    (tmp_path / (TARBALL + ".part")).write_bytes(b"not the start of the file" * 100)
    download.download(server.url + TARBALL, str(target), out=io.StringIO())
    assert server.requests == [("/" + TARBALL, "bytes=2500-", 200)]
    assert filecmp.cmp(target, os.path.join(published[0], TARBALL), shallow=False)


# ---------------------------------------------------------------------------
# Bounds: time, size, what the source and the .part file are
# ---------------------------------------------------------------------------
class Pieces(http.server.BaseHTTPRequestHandler):
    """Answers every GET with server.body (None: zeros without end, and no
    Content-Length), server.piece bytes at a time, server.pause seconds
    apart; chunked when server.chunked. Logs the Authorization header of
    each request in server.authorizations."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        server.authorizations.append(self.headers.get("Authorization"))
        self.send_response(200)
        if server.body is not None:
            self.send_header("Content-Length", str(len(server.body)))
        elif server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        try:
            while server.body is None or sent < len(server.body):
                piece = (bytes(server.piece) if server.body is None
                         else server.body[sent:sent + server.piece])
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if server.chunked
                                 else piece)
                sent += len(piece)
                time.sleep(server.pause)
        except OSError:  # the client went away
            pass

    def log_message(self, *args):
        pass


def sending(body=None, piece=65536, pause=0.0, chunked=False):
    """An http_server answering with Pieces."""
    return http_server(Pieces, body=body, piece=piece, pause=pause, chunked=chunked,
                       authorizations=[])


def refused(url, target, limits):
    """download() of url to target, which must raise Refused: its message
    and how many seconds it took."""
    start = time.monotonic()
    with no_hang(60), pytest.raises(download.Refused) as error:
        download.download(url, str(target), timeout=5, out=io.StringIO(), limits=limits)
    return str(error.value), time.monotonic() - start


@pytest.mark.slow
def test_a_drip_fails_after_one_window_and_keeps_what_arrived(tmp_path):
    # A byte every 20 ms: each read is well within the socket timeout.
    with sending(body=bytes(1_000_000), piece=1, pause=0.02) as httpd:
        message, seconds = refused(httpd.url + TARBALL, tmp_path / TARBALL,
                                   download.Limits(min_rate=10_000, window=0.5))
    assert re.fullmatch(r"it slowed to \d+ bytes/s, under the 10,000 bytes/s a download "
                        r"must keep over every 0.5 s", message), message
    assert seconds < 30  # a window and a little, rather than hanging
    part = tmp_path / (TARBALL + ".part")
    assert 0 < part.stat().st_size < 1000  # kept: the next run resumes it
    assert not (tmp_path / TARBALL).exists()


class DripHeaders(http.server.BaseHTTPRequestHandler):
    """Sends its status line a byte every 50 ms, without end: each read is
    well within the socket timeout, and no body ever starts."""

    def do_GET(self):
        try:
            for byte in itertools.cycle(b"HTTP/1.1 200 OK"):
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client went away
            pass

    def log_message(self, *args):
        pass


def test_a_server_that_drips_its_headers_is_refused_within_the_answer_time(tmp_path):
    with http_server(DripHeaders) as httpd:
        message, seconds = refused(httpd.url + TARBALL, tmp_path / TARBALL,
                                   download.Limits(answer_within=1))
    assert message == "it did not answer within 1 s"
    assert seconds < 10


def test_a_slow_but_honest_link_finishes(tmp_path):
    body = np.random.default_rng(1).bytes(300_000)
    with sending(body=body, piece=20_000, pause=0.02) as httpd:
        download.download(httpd.url + TARBALL, str(tmp_path / TARBALL), out=io.StringIO(),
                          limits=download.Limits(min_rate=5_000, window=0.2))
    assert (tmp_path / TARBALL).read_bytes() == body


@pytest.mark.slow
def test_the_deadline_stops_a_download_that_goes_on_and_on(tmp_path):
    with sending(body=bytes(10_000_000), piece=20_000, pause=0.01) as httpd:
        message, seconds = refused(httpd.url + TARBALL, tmp_path / TARBALL,
                                   download.Limits(deadline=1, min_rate=1_000, window=0.5))
    assert message == "it did not finish within the 1 s a download may take"
    assert seconds < 30
    assert 0 < (tmp_path / (TARBALL + ".part")).stat().st_size < 10_000_000


@pytest.mark.parametrize("chunked", [False, True], ids=["until closed", "chunked"])
def test_a_body_without_end_stops_at_the_cap_and_is_not_kept(tmp_path, chunked):
    with sending(body=None, chunked=chunked) as httpd:
        message, _ = refused(httpd.url + TARBALL, tmp_path / TARBALL,
                             download.Limits(max_bytes=1_000_000))
    assert message == "it sent more than the 1,000,000 bytes the file can be"
    assert os.listdir(tmp_path) == []


def test_a_file_larger_than_the_cap_is_refused_before_a_byte(server, tmp_path):
    (tmp_path / (TARBALL + ".part")).write_bytes(b"from an earlier run")
    message, _ = refused(server.url + TARBALL, tmp_path / TARBALL,
                         download.Limits(max_bytes=1_000_000))
    assert message == "it is 3,000,000 bytes, more than the 1,000,000 the file can be"
    # The server is wrong about this file: what an earlier run got from it goes too.
    assert os.listdir(tmp_path) == []


def test_a_file_url_copies_a_regular_file(published, tmp_path):
    source = os.path.join(published[0], TARBALL)
    download.download("file://" + source, str(tmp_path / TARBALL), out=io.StringIO())
    assert filecmp.cmp(tmp_path / TARBALL, source, shallow=False)


@pytest.mark.parametrize("make,kind", [
    (os.mkfifo, "a named pipe"),
    (lambda path: os.symlink("/dev/zero", path), "a character device"),
    (os.mkdir, "a folder"),
], ids=["named pipe", "device", "folder"])
def test_a_file_url_that_is_not_a_regular_file_is_refused_unread(tmp_path, make, kind):
    source = tmp_path / "source.tar.gz"
    make(str(source))
    (tmp_path / "cache").mkdir()
    message, _ = refused(source.as_uri(), tmp_path / "cache" / TARBALL, download.Limits())
    assert message == f"{source} is not a regular file but {kind}"
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("victim_exists", [True, False], ids=["to a file", "dangling"])
def test_a_link_planted_as_the_part_file_is_refused_and_not_followed(server, tmp_path,
                                                                     victim_exists):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "downloads").mkdir()
    victim = tmp_path / "elsewhere" / "precious.txt"
    if victim_exists:
        victim.write_text("precious")
    part = tmp_path / "downloads" / (TARBALL + ".part")
    os.symlink(victim, part)
    with pytest.raises(download.NotAPartFile) as error:
        download.download(server.url + TARBALL, str(tmp_path / "downloads" / TARBALL),
                          out=io.StringIO())
    assert str(error.value) == (f"{part} is a symbolic link (to {victim}), not a download in "
                                f"progress: a download never writes through it; remove it, "
                                f"then run again")
    assert server.requests == []
    assert os.path.islink(part)  # not ours to remove
    if victim_exists:
        assert victim.read_text() == "precious"
    else:
        assert not victim.exists()


def test_a_user_and_password_in_the_url_are_sent_but_never_shown(tmp_path):
    with sending(body=b"x" * 1000) as httpd:
        port = httpd.server_address[1]
        out = io.StringIO()
        download.download(f"http://alice:s%3Acret@127.0.0.1:{port}/{TARBALL}",
                          str(tmp_path / TARBALL), out=out)
    assert httpd.authorizations == ["Basic " + base64.b64encode(b"alice:s:cret").decode()]
    assert out.getvalue().startswith(f"downloading http://***@127.0.0.1:{port}/{TARBALL} to ")
    assert "alice" not in out.getvalue() and "cret" not in out.getvalue()


@pytest.mark.parametrize("url,expected", [
    ("https://user:pass@host/a@b", "https://***@host/a@b"),
    ("https://token@host:8080/path?to=a@b#c@d", "https://***@host:8080/path?to=a@b#c@d"),
    ("http://us@er:p@ss@host", "http://***@host"),
    ("http://host/a@b", "http://host/a@b"),
    ("file:///tmp/a@b.tar.gz", "file:///tmp/a@b.tar.gz"),
    ("not a url", "not a url"),
])
def test_shown_hides_the_userinfo(url, expected):
    assert download.shown(url) == expected
