"""suite/plumbing/environment.py: TensorFlow's start-up lines only with --verbose."""
import os

import pytest

from helpers import run_script




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
