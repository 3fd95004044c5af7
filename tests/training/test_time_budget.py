"""suite/training/time_budget.py (train.py --time_budget): the arithmetic that
sizes a run from its measured speed, on the clock as it is, and a real run
that plans itself and records the plan."""
import json
import time

import pytest

from helpers import TRAIN_ARGS, run_script
from suite.model.manifest import load_manifest
from suite.training import time_budget
from suite.training.config import Steps


def steps(total=1000, eval_every=100, save_every=100):
    return Steps(steps_per_epoch=100, total_steps=total, save_every=save_every,
                 save_every_secs=600, eval_every=eval_every, log_every=20, keep_checkpoints=5,
                 early_stop_patience=0)


def fitted(budget, seconds_per_step, validation=None, save=None, cap=None, at=0):
    fit = time_budget.StageFit(budget, steps(), validation_images_per_step=10, cap=cap)
    for _ in range(time_budget.UNTIMED_STEPS):
        fit.stepped(60.0)  # the slow first steps are not counted
    for _ in range(time_budget.CALIBRATION_STEPS):
        fit.stepped(seconds_per_step)
    assert fit.calibrated_now()
    if validation is not None:
        fit.validated(validation)
    if save is not None:
        fit.saved(save)
    return fit.last_step(at)


def test_the_steps_fill_what_is_left_of_the_budget():
    budget = time_budget.Budget(10, started=time.time())  # 600 s, 588 s after the margin
    # 0.5 s a step, no validation or checkpoint measured yet: validations are
    # estimated at 10 images per step, a third of a step's cost each.
    last = fitted(budget, 0.5)
    per_step = 0.5 + (0.5 * 10 / 3) / 100
    assert abs(last - (588 - 0.5 * 10 / 3) / per_step) <= 2
    # Measured validations and checkpoints count, the last of each included.
    last = fitted(budget, 0.5, validation=20.0, save=5.0, at=300)
    assert abs(last - (300 + (588 - 25) / (0.5 + 0.2 + 0.05))) <= 2


def test_a_stage_others_follow_ends_by_its_plan_and_a_spent_budget_stops_now():
    assert fitted(time_budget.Budget(10), 0.01, cap=1000) == 1000
    spent = time_budget.Budget(1, started=time.time() - 120)
    assert fitted(spent, 0.5, at=42) == 42


def test_the_features_take_a_third_of_the_budget_at_most():
    budget = time_budget.Budget(3, started=time.time())  # a third: 60 s
    assert budget.feature_passes(1, 10.0, views=5) == 5   # 10 s a view: all five fit
    assert budget.feature_passes(1, 25.0, views=5) == 3   # 25 s a view: two more fit
    assert budget.feature_passes(2, 130.0, views=5) == 2  # past the share: what is done


def test_a_network_stage_runs_when_an_epoch_of_it_fits():
    budget = time_budget.Budget(10, started=time.time())
    fits, epoch = budget.network_stage_fits(1000, 100, images_per_second=100)
    assert fits and epoch == pytest.approx((3 * 1000 + 100) / 100)
    assert not budget.network_stage_fits(100_000, 100, images_per_second=100)[0]
    assert budget.network_stage_fits(1000, 100, None) == (False, None)  # not measured


@pytest.mark.slow  # trains for most of 15 seconds
def test_train_plans_its_steps_into_the_budget_and_records_them(colour_data, tmp_path):
    model_dir = tmp_path / "models"
    result = run_script("train.py", "--data_dir", colour_data[1], "--model_dir", model_dir,
                        *TRAIN_ARGS, "--time_budget", "0.25")
    planned = [line for line in result.stdout.splitlines() if line.startswith("time budget:")]
    assert planned and planned[0].startswith("time budget: this stage ends at step ")
    manifest = load_manifest(str(model_dir))
    training = manifest["training"]
    assert training["time_budget"] == 0.25
    last = training["stages"][-1]["end_step"]
    assert training["total_steps"] == last
    assert f"finished: step {last}," in result.stdout
    with open(model_dir / "validation.json", encoding="utf-8") as f:
        assert json.load(f)["step"] == last  # the last validation ends the budget's run
