"""What every script shares before TensorFlow loads: its environment, and
errors a user can fix printed as one line.

Each script starts with

    import cli
    if __name__ == "__main__":
        cli.configure_environment()   # before TensorFlow is imported below

so the environment is set in this one named function, not as a side effect
of which module happens to be imported first. Nothing here imports TensorFlow.
"""
import os
import sys


def configure_environment():
    """Sets TensorFlow's environment variables; call before importing it.

    TF_ENABLE_ONEDNN_OPTS=1: oneDNN is off by default on AMD CPUs with AVX2
    only, and without it backprop through convs on small feature maps is
    pathologically slow (6.7x at 32 px on such a CPU).
    TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ INFO and WARNING lines stay out
    of the user's output.
    A setting the user made in the environment wins.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UserError(Exception):
    """A problem the user can fix: printed as one line, never as a traceback."""


def run_main(main):
    """Runs a script's main(): a UserError becomes 'error: ...' and exit code 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
