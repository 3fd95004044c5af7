"""suite/plumbing/environment.py: TensorFlow's start-up lines only with --verbose;
TensorFlow loaded without Keras and scikit-learn, and oneDNN's kernel cache."""
import os
import subprocess
import sys

import pytest

from helpers import REPO, run_script
from suite.plumbing import environment




@pytest.mark.slow
def test_tensorflow_start_up_noise_only_with_verbose(trained_model, colour_data):
    image = os.path.join(colour_data[0], "red", "000.png")
    quiet = run_script("useModel.py", image, "--model_dir", trained_model)
    # Only our own lines: the checkpoint it chose and the precision (on
    # stderr, so stdout stays one line per image).
    assert [line.split(":")[0].split()[0] for line in quiet.stderr.splitlines()] == [
        "using", "precision"], quiet.stderr
    verbose = run_script("useModel.py", image, "--model_dir", trained_model, "--verbose")
    assert verbose.stdout == quiet.stdout
    assert len(verbose.stderr) > 0  # TensorFlow's own start-up lines


CONFIGURED = ("import os, sys; from suite.plumbing import environment; environment.configure(); "
              "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], "
              "os.environ.get('TF_USE_LEGACY_KERAS'), "
              "'keras' in sys.modules, 'sklearn' in sys.modules)")


@pytest.mark.slow  # a process that loads TensorFlow
@pytest.mark.parametrize("cache", [None, "64"])
def test_tensorflow_loads_without_keras_and_with_the_kernel_cache_unless_told(cache):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if cache:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = cache  # the user's setting wins
    printed = subprocess.run([sys.executable, "-c", CONFIGURED], env=env, cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    expected_cache = cache or str(environment.ONEDNN_PRIMITIVE_CACHE)
    # Neither Keras nor scikit-learn was loaded, and the switch that kept Keras out is
    # gone again (child processes see the user's environment).
    assert printed == [expected_cache, "None", "False", "False"], printed
