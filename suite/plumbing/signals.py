"""Ctrl-C and SIGTERM as an exception raised where the script is, so that
every `with` and `finally` on the way out runs (temporary files removed),
then one line and exit code 128 + the signal's number, as a shell reports a
killed command."""
import contextlib
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised where the run is. A KeyboardInterrupt, so
    that a loop that stops on Ctrl-C stops on SIGTERM too."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_end_cleanly(what="nothing more done or written"):
    """Turns SIGTERM and SIGINT (Ctrl-C) into Stopped, so that every `with`
    and `finally` on the way out runs, then one line ("stopped by SIGTERM:
    WHAT") and exit code 128 + the signal's number. Further signals are
    ignored meanwhile: the cleanup is short, and SIGKILL remains. A forked
    worker that inherits the handler dies of the signal as usual.

    A signal that lands where Python swallows exceptions (a fork hook, a
    __del__) would be lost: such a swallowed Stopped is sent again, so that
    it is raised at the next line of ordinary code."""
    owner = os.getpid()
    raised = []  # the Stopped raised and not swallowed: later signals are ignored

    def stop(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if _DEFERRING:
            _DEFERRED.append(signum)
            return
        if not raised:
            raised.append(signum)
            raise Stopped(signum)

    previous_hook = sys.unraisablehook

    def swallowed(unraisable):
        if isinstance(unraisable.exc_value, Stopped) and os.getpid() == owner:
            raised.clear()
            # From another thread, a moment later: sent from here, the
            # handler would run, and be swallowed, inside this hook.
            threading.Timer(0.05, os.kill, (owner, unraisable.exc_value.signum)).start()
            return
        previous_hook(unraisable)

    sys.unraisablehook = swallowed
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        yield
    except BaseException as error:
        # After a Stopped, whatever comes out is its consequence (a `with`
        # cut short while entering may raise its own error on the way out).
        if not isinstance(error, Stopped) and not raised:
            raise
        signum = error.signum if isinstance(error, Stopped) else raised[0]
        print(f"stopped by {signal.Signals(signum).name}: {what}", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        sys.unraisablehook = previous_hook


_DEFERRING = []  # one entry per deferred() block open
_DEFERRED = []   # the stop signals that came meanwhile


@contextlib.contextmanager
def deferred():
    """Holds back signals_end_cleanly's Stopped while in this block: a stop
    signal that comes meanwhile is sent again as the block ends, so that it
    is raised after it. For a few statements that must not be cut apart,
    such as making a temporary folder and handing it to what removes it
    (suite.plumbing.files.temporary_folder)."""
    _DEFERRING.append(True)
    try:
        yield
    finally:
        _DEFERRING.pop()
        if not _DEFERRING and _DEFERRED:
            signum = _DEFERRED[0]
            _DEFERRED.clear()
            os.kill(os.getpid(), signum)
