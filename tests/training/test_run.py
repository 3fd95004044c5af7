"""suite/training/run.py: a step that cannot fit in memory is refused before
training starts."""
import pytest

from suite.plumbing import errors
from suite.training.run import check_memory


def test_a_training_step_that_cannot_fit_in_memory_is_refused_before_it_starts():
    with pytest.raises(errors.UserError, match="--image_size 4096 .* lower --image_size"):
        check_memory("layer_152", 4096, "imagenet", 64)
    check_memory("layer_14", 32, "imagenet", 32)  # the demo fits
