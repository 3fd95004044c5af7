"""suite/training/validation.py: when early stopping stops and when a stopped
run goes on, and which weights are better."""
import pytest

from suite.model import bookkeeping
from suite.training.validation import better_weights, continues_after_early_stop, early_stop_due


@pytest.mark.parametrize("step,best_step,patience,due", [
    (30, 30, 2, False),   # this validation was the best
    (40, 30, 2, False),   # one validation without improvement
    (50, 30, 2, True),    # two: patience 2 is used up
    (50, 30, 3, False),
    (50, 30, 0, False),   # 0: early stopping is off
    (50, None, 1, False),  # no best yet
    (20, 30, 1, False),   # resumed from before the best (its checkpoint was unreadable)
])
def test_early_stop_counts_validations_since_the_best(step, best_step, patience, due):
    assert early_stop_due(step, best_step, eval_every=10, patience=patience) is due


def test_a_run_that_stopped_early_goes_on_only_with_more_patience_or_steps():
    stopped = {"step": 50, "best_step": 30, "patience": 2, "epochs": 10, "total_steps": 100}
    assert not continues_after_early_stop(stopped, 2, 100)  # the same command
    assert not continues_after_early_stop(stopped, 0, 100)  # a forgotten flag
    assert not continues_after_early_stop(stopped, 1, 80)
    assert continues_after_early_stop(stopped, 3, 100)
    assert continues_after_early_stop(stopped, 2, 120)


def test_better_weights_are_the_raw_ones_on_a_tie():
    raw, average = bookkeeping.RAW, bookkeeping.MOVING_AVERAGE
    assert better_weights({raw: 0.8}) == raw
    assert better_weights({raw: 0.8, average: 0.85}) == average
    assert better_weights({raw: 0.8, average: 0.8}) == raw
    assert better_weights({raw: 0.9, average: 0.85}) == raw
