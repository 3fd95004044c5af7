"""suite/plumbing/signals.py and files.temporary_folder: a stop signal that
lands while a temporary folder is being made is raised once its removal is
in charge, so nothing is left behind."""
import os
import subprocess
import sys

from helpers import REPO

SCRIPT = """
import os, signal, sys
from suite.plumbing import files, signals
made = []
with signals.signals_end_cleanly("test"):
    with files.temporary_folder("stopped-") as folder:
        made.append(folder)
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            print("still running inside deferred()", flush=True)
        print("never printed: the signal is raised as deferred() ends", flush=True)
"""


def test_a_signal_inside_deferred_is_raised_after_it_and_the_folder_goes(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert result.stdout == "still running inside deferred()\n"
    assert result.returncode == 128 + 15, result.stderr
    assert result.stderr.splitlines()[-1] == "stopped by SIGTERM: test"
    assert os.listdir(tmp_path) == []  # the folder was removed


def test_a_temporary_folder_is_removed_with_its_contents(tmp_path, monkeypatch):
    from suite.plumbing import files
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with files.temporary_folder("records-") as folder:
        assert os.path.dirname(folder) == str(tmp_path)
        assert os.path.basename(folder).startswith("records-")
        open(os.path.join(folder, "a"), "w").close()
    assert os.listdir(tmp_path) == []
