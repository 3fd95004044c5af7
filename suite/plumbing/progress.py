"""The one progress printer: FlowIO.py's conversion and the weights' download.

On a terminal the line is rewritten in place (at most five times a second,
and once more at the end); in a log, where rewriting would leave a mess, a
line is printed at each tenth of the way (or every `every` units when the
total is unknown).
"""
import sys
import time

REWRITE_EVERY_SECS = 0.2


class Progress:
    """describe(done, rate) -> the text for `done` units of `total` (None:
    unknown) at `rate` units a second; with bar, a terminal shows a bar
    before it."""

    def __init__(self, total, describe, out=None, bar=False, every=None, start=0):
        self.total, self.describe, self.bar, self.every = total, describe, bar, every
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.start_time, self.start = time.monotonic(), start
        self.last_write, self.finished = None, False
        self.last_mark = self._mark(start)  # a log line marks progress made, not the start

    def _mark(self, done):
        """Which tenth of the way (or which multiple of `every`) done is in."""
        if self.total:
            return done * 10 // self.total
        return done // self.every if self.every else 0

    def _text(self, done):
        rate = (done - self.start) / max(time.monotonic() - self.start_time, 1e-9)
        text = self.describe(done, rate)
        if self.bar and self.tty and self.total:
            text = f"[{'#' * int(30 * done / self.total):<30}] {text}"
        return text

    def update(self, done):
        if self.tty:
            now = time.monotonic()
            if done == self.total:
                self.finish(done)
            elif self.last_write is None or now - self.last_write >= REWRITE_EVERY_SECS:
                self.last_write = now
                print("\r" + self._text(done), end="", file=self.out, flush=True)
            return
        mark = self._mark(done)
        if mark > self.last_mark:
            self.last_mark = mark
            print(self._text(done), file=self.out, flush=True)

    def finish(self, done):
        """The last state; on a terminal it ends the rewritten line."""
        if self.tty and not self.finished:
            self.finished = True
            print("\r" + self._text(done), file=self.out, flush=True)
        elif not self.tty and self._mark(done) > self.last_mark:
            self.update(done)
