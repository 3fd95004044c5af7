"""suite/insight/curves.py: train.py keeps curves.json and curves.png in the
model directory, one row per validation, and a resumed run shows one
history: the rows after the step it resumes from are trained again and
replaced. (tests/test_train.py checks the curves of real resumed runs,
one of them resumed from before its newest validation.)"""
import os

import pytest
from PIL import Image

from suite.insight.curves import CURVES_JSON, CURVES_PNG, Curves, load_rows


def steps_and_epochs(model_dir):
    return [(row["step"], row["epoch"]) for row in load_rows(model_dir)]


def test_rows_after_the_resumed_step_are_dropped_and_the_picture_redrawn(tmp_path):
    model_dir = str(tmp_path)
    picture = os.path.join(model_dir, CURVES_PNG)
    curves = Curves(model_dir, 0, lambda step: step / 10)
    for step in range(1, 31):
        curves.stepped(loss=3 - step / 10, accuracy=step / 30, learning_rate=0.1)
        if step % 10 == 0:
            curves.record(step, {"raw": step / 40, "moving average": step / 35},
                          final=step == 30)
            # drawn at the stage's end; before, not within REDRAW_SECONDS of the start
            assert os.path.exists(picture) == (step == 30)
    assert steps_and_epochs(model_dir) == [(10, 1.0), (20, 2.0), (30, 3.0)]
    first = load_rows(model_dir)[0]
    assert first["loss"] == pytest.approx(sum(3 - s / 10 for s in range(1, 11)) / 10)
    assert first["validation_top1"] == 0.25 and first["validation_top1_moving_average"] == 10 / 35

    os.remove(picture)
    resumed = Curves(model_dir, 20, lambda step: step / 10)  # the checkpoint of step 20
    resumed.stepped(loss=1.0, accuracy=0.5, learning_rate=0.05)
    resumed.record(21, final=True)
    assert steps_and_epochs(model_dir) == [(10, 1.0), (20, 2.0), (21, 2.1)]
    assert "validation_top1" not in load_rows(model_dir)[-1]
    with Image.open(picture) as drawn:
        assert drawn.format == "PNG" and drawn.width > 2 * drawn.height


def test_the_picture_is_redrawn_once_due_and_at_the_end_if_behind(tmp_path, monkeypatch):
    picture = tmp_path / CURVES_PNG
    curves = Curves(str(tmp_path), 0, float)
    curves.stepped(1.0, 0.5, 0.1)
    curves.record(1)
    assert not picture.exists()                     # within REDRAW_SECONDS
    curves.record(1, final=True)                    # the end: the pending picture
    assert picture.exists()
    monkeypatch.setattr("suite.insight.curves.REDRAW_SECONDS", 0)
    picture.unlink()
    curves.stepped(1.0, 0.5, 0.1)
    curves.record(2)                                # due
    assert picture.exists()
    picture.unlink()
    curves.record(2, final=True)                    # nothing new, nothing pending
    assert not picture.exists()


def test_a_record_with_no_new_step_writes_nothing(tmp_path):
    curves = Curves(str(tmp_path), 5, float)
    curves.record(5)
    assert not os.listdir(tmp_path)


def test_an_unreadable_curves_json_starts_a_new_history(tmp_path):
    (tmp_path / CURVES_JSON).write_text("{not json")
    curves = Curves(str(tmp_path), 0, float)
    curves.stepped(1.0, 0.5, 0.1)
    curves.record(1)
    assert steps_and_epochs(str(tmp_path)) == [(1, 1.0)]
