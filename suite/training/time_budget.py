"""train.py --time_budget: the run fits itself into the minutes given.

The budget counts from the start of train.py. Each part is sized by the
speed measured on this machine as the run goes:
  - the head stage's features: as many augmented views as end within
    FEATURE_SHARE of the budget (at least one);
  - a stage's steps (StageFit): after its first CALIBRATION_STEPS timed
    steps, and again after every validation, the end is set where the steps
    left, their validations and the last checkpoint end with the budget; the
    learning rate's schedule follows that end (suite.training.graph);
  - a stage through the network that --fine_tune auto planned after the
    head (suite.training.stages): run only when the time left holds at least
    MIN_NETWORK_EPOCHS of it at the speed the features were computed at (a
    training step costs about three forward passes).
"""
import time

FEATURE_SHARE = 1 / 3
# The first steps of a graph are slow (memory, kernels chosen): not timed.
UNTIMED_STEPS = 3
CALIBRATION_STEPS = 10
# A training step against the forward pass the features took, per image.
TRAINING_COST = 3.0
MIN_NETWORK_EPOCHS = 1.0
# Kept back for what follows the last step: the process's exit, and time's noise.
MARGIN = 0.02


class Budget:
    """The run's deadline, time.time() based."""

    def __init__(self, minutes, started=None):
        self.minutes = minutes
        self.started = time.time() if started is None else started
        self.deadline = self.started + 60 * minutes

    def left(self):
        return self.deadline - time.time() - MARGIN * 60 * self.minutes

    def feature_passes(self, done, seconds, views):
        """How many passes over the training images (augmented views) to
        compute features for, done of them having taken seconds: views, or
        fewer so that they end within FEATURE_SHARE of the budget."""
        per_pass = seconds / max(1, done)
        share_left = self.started + FEATURE_SHARE * 60 * self.minutes - time.time()
        return int(max(done, min(views, done + share_left // max(per_pass, 1e-9))))

    def network_stage_fits(self, num_train, num_validation, images_per_second):
        """Whether MIN_NETWORK_EPOCHS of a stage through the network fit in
        what is left, at images_per_second of forward passes (the features'),
        and the seconds one epoch is expected to take."""
        if not images_per_second:
            return False, None
        epoch = (TRAINING_COST * num_train + num_validation) / images_per_second
        return self.left() >= MIN_NETWORK_EPOCHS * epoch, epoch


class StageFit:
    """Sets a stage's last step from its measured speed (see the module)."""

    def __init__(self, budget, steps, validation_images_per_step, cap=None):
        """steps: the stage's Steps; validation_images_per_step: validation
        images over training images per step (its cost before the first
        validation is measured); cap: the last step it may end at (None: any)."""
        self.budget, self.steps, self.cap = budget, steps, cap
        self.validation_ratio = validation_images_per_step
        self.timed, self.step_seconds = 0, 0.0
        self.validations, self.save_seconds = [], None

    def stepped(self, seconds):
        self.timed += 1
        if self.timed > UNTIMED_STEPS:
            self.step_seconds += seconds

    def validated(self, seconds):
        self.validations.append(seconds)

    def validation_seconds(self):
        """A validation's time: the median of the latest, the first left out
        once there are others (it warms the graph up); None before any."""
        latest = sorted(self.validations[1:][-5:] or self.validations)
        return latest[len(latest) // 2] if latest else None

    def saved(self, seconds):
        self.save_seconds = seconds

    def calibrated_now(self):
        """Whether this step ends the calibration (the first plan is due)."""
        return self.timed == UNTIMED_STEPS + CALIBRATION_STEPS

    def last_step(self, step):
        """The step the stage should end at, being at step now."""
        per_step = self.step_seconds / max(1, self.timed - UNTIMED_STEPS)
        eval_every = self.steps.eval_every
        measured = self.validation_seconds()
        validation = (measured if measured is not None
                      else per_step * self.validation_ratio / TRAINING_COST) if eval_every else 0
        save = self.save_seconds or 0.0
        each = per_step + (validation / eval_every if eval_every else 0) \
            + save / max(1, self.steps.save_every)
        room = self.budget.left() - validation - save  # the last validation and checkpoint
        last = step + max(0, int(room // max(each, 1e-9)))
        return last if self.cap is None else min(last, self.cap)
