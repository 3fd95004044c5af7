"""Watching a cluster worker's session.runs, which Python cannot interrupt
once started: a peer that vanished without closing its sockets (a machine
switched off, a network cut) and a Ctrl-C or SIGTERM while a step waits end
the process in one line instead of leaving it blocked forever."""
import contextlib
import os
import select
import signal
import sys
import threading
import time

from tensorflow.python.client.session import SessionInterface

from suite.training.cluster_server import reachable

LOST_AFTER_SECS = 30      # a peer unreachable this long during a step is lost
STOP_GRACE_SECS = 10      # after Ctrl-C or SIGTERM, the longest a step may go on
PROBE_EVERY_SECS = 5


class PeerWatch:
    """Watches the session.runs of a cluster worker, which cannot be
    interrupted from Python once started:

    - it probes the peers every PROBE_EVERY_SECS while a run is in progress;
      when one has been unreachable for LOST_AFTER_SECS during a run, it
      prints a line naming it and ends the process with exit code 3;
    - it sees Ctrl-C and SIGTERM as they arrive (through signal.set_wakeup_fd,
      written by the C-level handler even while the main thread is blocked):
      a run still in progress STOP_GRACE_SECS after the signal, or a second
      signal during a run, ends the process with 128 + the signal's number.
      A step that ends in time lets the loop save and stop as usual; so that
      a slow machine's ordinary steps always do, the grace is at least twice
      the longest run so far.

    Nothing is saved on these exits; the checkpoints on disk stay as they
    were. Between runs nothing is probed, so the chief validating or saving
    after the last step, with the others gone, is fine."""

    def __init__(self, plan, lost_after=LOST_AFTER_SECS, probe_every=PROBE_EVERY_SECS,
                 on_lost=None, stop_grace=STOP_GRACE_SECS, on_stuck=None):
        self._plan, self._lost_after, self._probe_every = plan, lost_after, probe_every
        self._stop_grace = stop_grace
        self._on_lost = on_lost or self._exit_lost
        self._on_stuck = on_stuck or self._exit_stuck
        self._running_since = None
        self._longest_run = 0.0
        self._signals = []  # (signal number, when) of the signals received
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._wakeup = self._listen_for_signals()
        self._thread = threading.Thread(target=self._watch, name="PeerWatch", daemon=True)
        self._thread.start()

    def stop(self):
        self._stopped.set()
        self._thread.join()
        if self._wakeup is not None:
            read_end, write_end, previous = self._wakeup
            with contextlib.suppress(ValueError):  # not the main thread
                signal.set_wakeup_fd(previous)
            os.close(read_end)
            os.close(write_end)

    def running(self):
        return _Running(self)

    @staticmethod
    def _listen_for_signals():
        """(read end, write end, the previous wakeup fd) of the pipe the C-level
        signal handler writes each signal's number into; None outside the
        main thread, where Python allows no wakeup fd."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:
            os.close(read_end)
            os.close(write_end)
            return None
        return read_end, write_end, previous

    def _watch(self):
        unreachable_since, next_probe = {}, 0.0
        while not self._stopped.is_set():
            self._receive_signals(timeout=min(0.5, self._probe_every))
            with self._lock:
                running_since = self._running_since
            now = time.monotonic()
            if running_since is None:
                unreachable_since.clear()
                continue
            if self._stuck(running_since, now):
                return
            if now < next_probe:
                continue
            next_probe = now + self._probe_every
            for job, index, address in self._plan.peers():
                if reachable(address, timeout=min(3.0, self._probe_every)):
                    unreachable_since.pop((job, index), None)
                    continue
                since = max(unreachable_since.setdefault((job, index), now), running_since)
                if now - since >= self._lost_after:
                    self._on_lost(self._plan.task_name(job, index), now - since)
                    return

    def _receive_signals(self, timeout):
        if self._wakeup is None:
            self._stopped.wait(timeout)
            return
        readable, _, _ = select.select([self._wakeup[0]], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                now = time.monotonic()
                self._signals += [(number, now) for number in os.read(self._wakeup[0], 64)]

    def _stuck(self, running_since, now):
        """Whether a signal has waited too long for the run in progress (then
        on_stuck has been called)."""
        during_run = [(number, when) for number, when in self._signals if when >= running_since]
        grace = max(self._stop_grace, 2 * self._longest_run)
        if self._signals and (len(during_run) >= 2 or now - self._signals[0][1] >= grace):
            number = (during_run or self._signals)[-1][0]
            self._on_stuck(signal.Signals(number).name, now - self._signals[0][1])
            return True
        return False

    @staticmethod
    def _exit_lost(name, seconds):
        _exit_now(f"lost {name}: unreachable for {seconds:.0f} s while this worker waited "
                  f"for it; every worker stops. Start them all again with the same commands "
                  f"to resume from the last checkpoint", 3)

    @staticmethod
    def _exit_stuck(signal_name, seconds):
        _exit_now(f"{signal_name}: this worker's step has waited {seconds:.0f} s for the other "
                  f"workers since; stopping without saving (the checkpoints on disk stay as "
                  f"they were)", 128 + signal.Signals[signal_name].value)


def _exit_now(message, code):
    """Ends the process from the watch's thread: the main thread is blocked
    in a session.run that Python cannot interrupt."""
    print(f"\nerror: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


class _Running:
    def __init__(self, watch):
        self._watch = watch

    def __enter__(self):
        with self._watch._lock:
            self._watch._running_since = time.monotonic()

    def __exit__(self, *exc):
        with self._watch._lock:
            self._watch._longest_run = max(self._watch._longest_run,
                                           time.monotonic() - self._watch._running_since)
            self._watch._running_since = None


class WatchedSession(SessionInterface):
    """A session whose every run() is watched by a PeerWatch; train.py's loop
    and the Savers use it as the session itself."""

    def __init__(self, session, watch):
        self._session, self._watch = session, watch

    def run(self, *args, **kwargs):
        with self._watch.running():
            return self._session.run(*args, **kwargs)

    @property
    def graph(self):
        return self._session.graph

    @property
    def graph_def(self):
        return self._session.graph_def

    @property
    def sess_str(self):
        return self._session.sess_str

    def partial_run_setup(self, *args, **kwargs):
        return self._session.partial_run_setup(*args, **kwargs)

    def partial_run(self, *args, **kwargs):
        return self._session.partial_run(*args, **kwargs)
