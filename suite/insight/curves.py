"""train.py's training curves, kept in the model directory without
TensorBoard: curves.json (one row per validation: the step, the epoch, the
mean training loss and top-1 since the row before, the validation top-1 and
the learning rate) and curves.png drawn from it.

A resumed run first drops the rows after the step it resumes from: those
steps are trained again, so the picture shows one history, the one the
checkpoints hold.

The JSON is written at every validation; the picture is redrawn at the
first validation REDRAW_SECONDS after the last drawing, and at the end of
each stage. A drawing costs about 0.2 s of CPU, and the first one half a
second more to load matplotlib: a run that validates every few seconds (the
demo validates 30 times in a minute) would otherwise spend a tenth of its
time drawing, while one whose validations are a minute apart is redrawn at
each of them."""
import json
import os
import time

from suite.insight.figures import curves_png
from suite.model.bookkeeping import RAW
from suite.plumbing.errors import UserError, reason
from suite.plumbing.files import atomic_write, atomic_write_json

CURVES_JSON = "curves.json"
CURVES_PNG = "curves.png"
REDRAW_SECONDS = 30


def load_rows(model_dir):
    """curves.json's rows; none when it is absent or unreadable (the curves
    are a picture of the run, never a reason to stop one)."""
    try:
        with open(os.path.join(model_dir, CURVES_JSON), encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        return [row for row in rows if isinstance(row, dict) and "step" in row]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class Curves:
    """The chief's curves of one stage: stepped() after every training step,
    record() at each validation and at the stage's end."""

    def __init__(self, model_dir, step, epoch_of):
        """step: the step the stage starts or resumes from; epoch_of(step):
        the run's epoch (over every stage) at a step."""
        self.model_dir, self.epoch_of = model_dir, epoch_of
        self.rows = [row for row in load_rows(model_dir) if row["step"] <= step]
        self.drawn_at, self.undrawn = time.monotonic(), False
        self._restart(step)

    def _restart(self, step):
        self.step, self.loss, self.top1, self.count = step, 0.0, 0.0, 0
        self.learning_rate = None

    def stepped(self, loss, accuracy, learning_rate):
        self.loss += float(loss)
        self.top1 += float(accuracy)
        self.count += 1
        self.learning_rate = float(learning_rate)

    def record(self, step, validation=None, final=False):
        """A row for the steps since the last one, with the validation's
        top-1 (validation_accuracy's {weights: top-1}) when there was one;
        then curves.json is written, and curves.png when it is due (or
        final: the stage's end)."""
        if step <= self.step or not self.count:
            if final and self.undrawn:
                self.write(draw=True)
            return
        row = {"step": step, "epoch": round(self.epoch_of(step), 4),
               "loss": self.loss / self.count, "train_top1": self.top1 / self.count,
               "learning_rate": self.learning_rate}
        for weights, top1 in (validation or {}).items():
            key = "validation_top1" + ("" if weights == RAW else "_moving_average")
            row[key] = top1
        self.rows.append(row)
        self._restart(step)
        self.write(draw=final or time.monotonic() - self.drawn_at >= REDRAW_SECONDS)

    def write(self, draw):
        path = os.path.join(self.model_dir, CURVES_PNG)
        try:
            atomic_write_json(os.path.join(self.model_dir, CURVES_JSON), {"rows": self.rows},
                              indent=1)
            self.undrawn = not draw
            if draw:
                atomic_write(path, curves_png(self.rows))
                self.drawn_at = time.monotonic()
        except OSError as error:
            raise UserError(f"cannot write {path} ({reason(error)}): free some space in "
                            f"{self.model_dir} and run train.py again to continue")
