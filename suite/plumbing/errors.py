"""Errors a user can fix, printed as one line, never as a traceback.

A script's main() runs under run_main(): a UserError becomes "error: ..." on
stderr and exit code 2. reason() picks the line that says what went wrong
out of an exception's text (TensorFlow's errors start with pages of noise).
"""
import os
import sys


class UserError(Exception):
    """A problem the user can fix: printed as one line, never as a traceback."""


def run_main(main):
    """Runs a script's main(): a UserError becomes 'error: ...' and exit code 2.

    When the reader of stdout goes away (`python useModel.py ... | head`),
    the script stops quietly with exit code 1, as Python's documentation
    recommends ("Note on SIGPIPE"), instead of a BrokenPipeError traceback.
    """
    try:
        main()
        sys.stdout.flush()  # here, not at exit, where a broken pipe cannot be caught
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # What is still buffered can go nowhere: point stdout at /dev/null so
        # that the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def reason(error):
    """The line of an exception that says what went wrong, for a one-line message.

    TensorFlow's graph errors start with "Graph execution error:" and the
    node's Python stack; the real reason (e.g. ".../model.ckpt-5.data...;
    No space left on device") is the first line after that noise.
    """
    text = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    text = str(text).split("Original error:")[-1]  # the Saver wraps the error it hit
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Hint:")
    lines = [line.strip() for line in str(text).splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    line = (useful or lines or [type(error).__name__])[0]
    # "<path>; No space left on device": the cause is what follows the path.
    return line.rsplit("; ", 1)[-1] if "; " in line else line
