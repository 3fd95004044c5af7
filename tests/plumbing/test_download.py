"""The resumable download, from a real HTTP server on 127.0.0.1: a partial
file resumed with a Range request, a server without ranges, the progress
line on a terminal."""
import filecmp
import io
import os
import shutil

import numpy as np
import pytest

from helpers import serving
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
