"""The training loop: steps, progress lines, checkpoints, validations, best/,
the curves (suite.insight.curves) and early stopping on the chief; the same
steps, writing nothing, on every other worker of a cluster. Ctrl-C and
SIGTERM end a run after its step with a checkpoint saved.
"""
import dataclasses
import os
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from suite.data.pipeline import explain_data_error
from suite.insight.curves import Curves
from suite.model import checkpoints
from suite.model.bookkeeping import (BEST_DIR, MOVING_AVERAGE, RAW, load_best, load_validation,
                                     save_validation)
from suite.plumbing.errors import UserError
from suite.training.session import wait_for_everyone
from suite.training.validation import better_weights, early_stop_due, validation_accuracy


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a flag the loop checks between steps, so a
    checkpoint is saved instead of the process dying mid-step."""

    def __init__(self):
        self.signal_name = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name}: saving a checkpoint, then stopping "
              f"(press Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)


def format_duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ChiefLoop:
    """The chief's training steps (the only process of a plain run), with
    checkpoints, validations and best/. run() returns the exit code."""

    def __init__(self, config, session, ops, validation, saver, best_savers, summaries,
                 fit=None, replanned=None):
        """fit: the stage's time_budget.StageFit, which moves its last step;
        replanned(config): called with the config of each new plan."""
        self.config, self.session, self.ops = config, session, ops
        self.validation, self.saver, self.best_savers = validation, saver, best_savers
        self.summaries = summaries
        self.fit, self.replanned = fit, replanned
        self.stop = StopRequest()
        self.early_stop = None  # its record, once early stopping decides to stop
        self.finished = False  # trained to the end (no stop, early or requested)
        self.tty = sys.stdout.isatty()
        self.best = load_best(config.model_dir)

    def run(self, step, patience_from=0):
        """Trains from step to the end (or a stop). Early stopping counts
        validations without improvement from the best one, or from
        patience_from (where an earlier early stop ended, when this run
        continues it) if that is later."""
        ops = self.ops
        # In a cluster, a stop request (any worker's) ends every worker after
        # the same step: it travels with the step's metrics.
        agreeing = "stop_requested" in ops
        agreed = not agreeing
        self._start_window(step)
        self.curves = Curves(self.config.model_dir, step, self._run_epoch)
        last_save, loss = time.time(), float("nan")
        while step < self.config.steps.total_steps and not (self._stopping() and agreed):
            started = time.time()
            metrics, loss, accuracy, learning_rate = self._step(agreeing)
            step += 1
            steps = self.config.steps
            if self.fit:
                self.fit.stepped(time.time() - started)
                if self.fit.calibrated_now():
                    self._replan(step)
            if agreeing and metrics[2] > 0:
                agreed = True
                if not self._stopping():
                    self.stop.signal_name = "another worker's stop request"
            if not np.isfinite(loss):
                # Stop before saving: the newest checkpoint on disk stays finite.
                print(f"\nerror: the loss became {loss} at step {step}. Lower --learning_rate "
                      f"(now {self.config.optimisation.learning_rate}) or check the data; "
                      f"training resumes from the last finite checkpoint.", file=sys.stderr)
                return 1
            self._progress(step, loss, accuracy, learning_rate)
            self.curves.stepped(loss, accuracy, learning_rate)
            if step % steps.save_every == 0 or time.time() - last_save > steps.save_every_secs:
                started = time.time()
                checkpoints.save_checkpoint(self.session, self.saver, self.config.model_dir, step)
                last_save = time.time()
                if self.fit:
                    self.fit.saved(last_save - started)
            if self.validation is not None and (
                    (step - steps.first_step) % steps.eval_every == 0
                    or step == steps.total_steps):
                started = time.time()
                self._validate(step, patience_from)
                if self.fit:
                    self.fit.validated(time.time() - started)
                    self._replan(step)
        if self.tty:
            print()
        return self._finish(step, loss)

    def _replan(self, step):
        """The time budget's new last step for the stage, from the speed so far."""
        steps = self.config.steps
        last = max(step, self.fit.last_step(step))
        if last == steps.total_steps:
            return
        self.config = dataclasses.replace(self.config, steps=dataclasses.replace(
            steps, total_steps=last))
        self.fit.steps = self.config.steps
        epochs = (last - steps.first_step) / steps.steps_per_epoch
        if self.fit.calibrated_now() or abs(last - steps.total_steps) > 0.1 * (
                steps.total_steps - steps.first_step):  # a plan, or a change worth a line
            line = (f"time budget: this stage ends at step {last} ({epochs:.2f} epochs), in "
                    f"{self.fit.budget.left() / 60:.1f} minutes")
            print(("\n" if self.tty else "") + line, flush=True)
        if self.replanned:
            self.replanned(self.config)

    def _stopping(self):
        return bool(self.stop.signal_name or self.early_stop)

    def _step(self, agreeing):
        """One session run of the train op: (its metrics, loss, accuracy,
        learning rate)."""
        ops = self.ops
        feed = {ops["stop_requested"]: float(self._stopping())} if agreeing else {}
        if self.fit:
            feed[ops["stage_end"]] = float(self.config.steps.total_steps)
        try:
            metrics, loss, accuracy, learning_rate, _ = self.session.run(
                [ops["train_op"], ops["loss"], ops["accuracy"], ops["learning_rate"],
                 ops["global_step"]], feed)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise explain_data_error(self.config.data_dir, "train", error)
        except tf.errors.ResourceExhaustedError:
            raise UserError(f"out of memory in a training step at --image_size "
                            f"{self.config.network.image_size} and --batch_size "
                            f"{self.config.optimisation.batch_size}: lower either and run "
                            f"train.py again")
        return metrics, loss, accuracy, learning_rate

    def _start_window(self, step):
        self.window_start, self.window_steps, self.window_accuracy = time.time(), 0, 0.0
        self.run_start, self.run_start_step = time.time(), step

    def _run_epoch(self, step):
        """The run's epoch at a step of this stage, counting earlier stages'."""
        config = self.config
        stages = config.stages or ()
        earlier = stages[:stages.index(config.stage)] if config.stage in stages else ()
        return (sum(stage.epochs for stage in earlier)
                + (step - config.steps.first_step) / config.steps.steps_per_epoch)

    def _progress(self, step, loss, accuracy, learning_rate):
        """The progress line (rewritten on a terminal, every --log_every_steps
        steps in a log) and its TensorBoard summaries."""
        self.window_steps += 1
        self.window_accuracy += accuracy
        total = self.config.steps.total_steps
        if not (self.tty or step % self.config.steps.log_every == 0 or step == total):
            return
        now = time.time()
        rate = (self.window_steps * self.ops.get("images_per_step",
                                                 self.config.optimisation.batch_size)
                / max(now - self.window_start, 1e-9))
        overall = (step - self.run_start_step) / max(now - self.run_start, 1e-9)
        eta = format_duration((total - step) / max(overall, 1e-9))
        mean_accuracy = self.window_accuracy / self.window_steps
        epoch = (step - self.config.steps.first_step) / self.config.steps.steps_per_epoch
        line = (f"step {step}/{total} epoch {epoch:.2f} "
                f"loss {loss:.4f} acc {mean_accuracy:.3f} lr {learning_rate:.4g} "
                f"{rate:.1f} img/s ETA {eta}")
        print(("\r" + line + "  ") if self.tty else line, end="" if self.tty else "\n",
              flush=True)
        self.summaries.write(step, {"loss": loss, "accuracy": mean_accuracy,
                                    "learning_rate": learning_rate, "images_per_second": rate})
        self.window_start, self.window_steps, self.window_accuracy = now, 0, 0.0

    def _validate(self, step, patience_from):
        """A validation: its line and summaries, best/ when it is the best so
        far, validation.json, and whether early stopping stops now."""
        model_dir = self.config.model_dir
        top1 = validation_accuracy(self.session, self.validation, self.config.data_dir)
        weights = better_weights(top1)
        self.summaries.write(step, {f"validation_top1{tag}": top1[name] for name, tag in
                                    ((RAW, ""), (MOVING_AVERAGE, "_moving_average"))
                                    if name in top1})
        marker = ""
        if top1[weights] > self.best["validation_top1"]:
            self.best = checkpoints.save_best(self.session, self.best_savers[weights],
                                              model_dir, step, top1[weights], weights)
            marker = (" (best so far, saved to best/)" if weights == RAW else
                      " (best so far: the moving average, saved to best/)")
        # What readers of the regular checkpoints go by (checkpoints.reads_moving_averages).
        record = {"step": step, "top1": top1[RAW], "weights": weights}
        line = f"validation top-1 at step {step}: {top1[RAW]:.4f}"
        if MOVING_AVERAGE in top1:
            record["moving_average_top1"] = top1[MOVING_AVERAGE]
            line += f" raw, {top1[MOVING_AVERAGE]:.4f} moving average"
        save_validation(model_dir, record)
        self.curves.record(step, top1)
        print(("\n" if self.tty else "") + line + marker, flush=True)
        steps = self.config.steps
        if step < steps.total_steps and early_stop_due(
                step, max(self.best["step"] or 0, patience_from), steps.eval_every,
                steps.early_stop_patience):
            self.early_stop = {"best_step": self.best["step"],
                               "patience": steps.early_stop_patience,
                               "epochs": self.config.optimisation.epochs,
                               "total_steps": steps.total_steps}

    def _finish(self, step, loss):
        """The last checkpoint, and the line that says how the run ended."""
        model_dir = self.config.model_dir
        path = checkpoints.save_checkpoint(self.session, self.saver, model_dir, step)
        self.curves.record(step, final=True)  # the steps since the last validation, if any
        self.finished = not self._stopping()
        best_dir = os.path.join(model_dir, BEST_DIR)
        if self.stop.signal_name:
            print(f"stopped by {self.stop.signal_name} at step {step}; saved {path}. "
                  f"Run train.py again to continue.")
        elif self.early_stop:
            # Recorded, so that running the same command again does not train on.
            save_validation(model_dir, dict(load_validation(model_dir),
                                            stopped_early=dict(self.early_stop, step=step)))
            print(f"stopped early at step {step}: validation top-1 has not beaten "
                  f"{self.best['validation_top1']:.4f} (step {self.best['step']}, in "
                  f"{best_dir}) in {self.config.steps.early_stop_patience} validations; saved "
                  f"{path}. To train further, raise --early_stop_patience or --epochs")
        else:
            print(f"finished: step {step}, loss {loss:.4f}; saved {path}")
            if self.best["step"] is not None:
                weights = (", the moving averages of the weights"
                           if self.best.get("weights") == MOVING_AVERAGE else "")
                print(f"best validation top-1 {self.best['validation_top1']:.4f} at step "
                      f"{self.best['step']} (in {best_dir}{weights})")
        return 0


def replica_loop(config, session, ops, step):
    """A worker other than the chief: the same steps as the chief (every step
    is collective), writing nothing; the chief saves the checkpoints,
    validates and reports progress. Returns the exit code."""
    plan, total_steps = config.plan, config.steps.total_steps
    stop = StopRequest()
    fetches = [ops["train_op"], ops["global_step"]]
    result = 0
    while step < total_steps:
        metrics, _ = session.run(fetches, {ops["stop_requested"]:
                                           float(stop.signal_name is not None)})
        step += 1
        if not np.isfinite(metrics[0]):  # the mean over all replicas: all stop
            print(f"error: the loss became {metrics[0]} at step {step}; the chief "
                  f"says what to do", file=sys.stderr)
            result = 1
            break
        if metrics[2] > 0:  # a stop, agreed by all workers after this step
            break
    wait_for_everyone(plan, session, ops)
    if result == 0:
        print(f"{plan.task_name()}: {'stopped' if step < total_steps else 'finished'} "
              f"at step {step}; the chief saved the checkpoint")
    return result
