"""The training loop: epochs of jitted steps, logging, checkpoints, resume, preemption and the
non-finite guard, then the final test report.

The loop syncs with the device only at log points (every `train.log_every_steps` steps and at
epoch ends), where it reads the accumulated metric sums; every device-to-host read of the loop
goes through `fetch`. Everything that determines the rest of a run is in the checkpoint or is a
function of (seed, epoch, step), so a run killed at any moment resumes bitwise.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from ferjax.data.dataset import FerData
from ferjax.data.input import TrainInput
from ferjax.data.preprocess import normalization
from ferjax.evaluation.predict import (
    adjust_logits,
    adjust_tau_setting,
    choose_tau,
    is_better,
    predict_split,
    report_scalars,
    report_with_loss,
)
from ferjax.models.layers import auto_choice
from ferjax.runtime import devices
from ferjax.runtime.clock import Clock
from ferjax.runtime.distributed import where
from ferjax.runtime.errors import Preempted, TrainingDiverged
from ferjax.runtime.preload import preload
from ferjax.runtime.progress import Progress
from ferjax.runtime.signals import StopSignal
from ferjax.runtime.workdir import (
    LOGIT_ADJUSTMENT,
    SAMPLING_REPORT,
    TIME_ACCOUNT,
    RunInfo,
    Workdir,
)
from ferjax.training import summaries, transfer
from ferjax.training.checkpoint import Checkpoints, check_config_unchanged
from ferjax.training.logs import MetricLog
from ferjax.training.losses import LOSS_NEEDS_PRIOR
from ferjax.training.program import Program, build
from ferjax.training.schedule import Intervals, prior_line
from ferjax.training.step import NEVER, accumulate

MAX_ROLLBACKS = 3


def fetch(tree):
    """Device-to-host copy of `tree`. The step loop reads from the device only through this
    function, and only at log points (tests count its calls)."""
    return jax.device_get(tree)


class Trainer:
    """One training run on `data` in `workdir`: set up in __init__, trained by `run()`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        data: FerData,
        clock: Clock | None = None,
    ):
        self.config, self.data = config, data
        self.clock = clock or Clock().activate()
        self.clock.enter("sampling")
        self.workdir = Workdir(workdir)
        self.is_main = jax.process_index() == 0
        os.makedirs(workdir, exist_ok=True)
        self.train, self.val, self.test = (data.splits[s] for s in ("train", "val", "test"))
        self.mesh = devices.make_mesh()
        self.input = TrainInput.from_config(
            config, self.train, data.num_classes, data.class_names, self.mesh
        )
        self.sampler = self.input.sampler
        self.on_device = self.input.on_device
        self.global_batch = self.input.global_batch
        self.steps_per_epoch = self.input.steps_per_epoch
        self.clock.enter("setup")
        self.total_steps = self.steps_per_epoch * config.train.num_epochs
        self.intervals = Intervals(
            self.steps_per_epoch,
            config.train.log_every_steps,
            config.train.checkpoint_every_steps,
            config.train.checkpoint_every_minutes,
        )
        self.progress = Progress(
            config.train.num_epochs,
            self.steps_per_epoch,
            self.global_batch,
            config.train.verbosity,
            config.train.progress_seconds,
        )
        self.program: Program = build(
            config,
            num_classes=data.num_classes,
            image_shape=data.image_shape,
            steps_per_epoch=self.steps_per_epoch,
            norm=normalization(config.data.normalize, self.train.images),
            class_counts=self.sampler.effective_counts(),
            mesh=self.mesh,
            compile_ahead=self.input.step_arguments(self.mesh),
        )
        self.state = transfer.init_from(config, self.program.state, workdir)
        self.val_images = devices.replicate(self.val.images, self.mesh)
        self.eval_programs: dict = {}  # compiled evaluation programs (evaluation.predict)
        self.say(self.input.description)
        if line := auto_choice(config.model.conv_impl, self.program.model):
            self.say(line)
        self.ckpts = Checkpoints(self.workdir)
        self.meta = {"best_value": None, "best_step": None}
        self.config_dict = json.loads(config.to_json_best_effort())
        self._resume()
        self._write_run_files()
        fresh = self.is_main and int(self.state.step) == 0
        self._grid = summaries.AugmentedGrid(self.train.images, config) if fresh else None
        grid = self._grid.write if fresh else None
        self.log = MetricLog(self.workdir, self._run_start_summaries if fresh else None, grid)
        self.flops_per_step = None

    # ------------------------------------------------------------------ set-up

    def _resume(self) -> None:
        restored, meta = self.ckpts.restore_latest(self.state)
        if restored is None:
            return
        check_config_unchanged(meta.get("config"), self.config, self.workdir.path)
        self.state = restored
        self.meta = {"best_value": meta.get("best_value"), "best_step": meta.get("best_step")}
        self.say(f"resumed from step {int(fetch(self.state.step))} of {self.total_steps}")

    def _write_run_files(self) -> None:
        if self.is_main:
            model = self.program.config.model
            self.workdir.write_info(
                RunInfo(
                    class_names=tuple(self.data.class_names),
                    image_shape=tuple(self.data.image_shape[:2]),
                    channels=self.data.image_shape[2],
                    normalization=self.program.norm,
                    model=model.name,
                    style=model.style if model.name == "resnet50" else None,
                    stem=model.stem if model.name in ("resnet18", "resnet34") else None,
                )
            )
            self.workdir.write_config(self.config)
            self.workdir.write_json(SAMPLING_REPORT, self.sampler.report())
        self.say(self.sampler.summary_line())
        if self.config.loss.name in LOSS_NEEDS_PRIOR or adjust_tau_setting(self.config):
            self.say(prior_line(self.sampler, self.prior, self.config))

    def _run_start_summaries(self, writer) -> None:
        summaries.write_hparams(writer, self.config)

    # ------------------------------------------------------------------ helpers

    def say(self, message: str) -> None:
        """An informational line (process 0, train.verbosity >= 1; above the progress bar,
        never through it)."""
        self.progress.print(message)

    def meta_at(self, step: int) -> dict:
        return {
            "step": step,
            "epoch": step // self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "best_metric": self.config.train.best_metric,
            "best_value": self.meta["best_value"],
            "best_step": self.meta["best_step"],
            "config": self.config_dict,
        }

    def throughput(self, steps: int, seconds: float) -> dict:
        """steps/s, images/s (total and per device) and, with train.peak_flops_per_device,
        model FLOPs utilisation from XLA's cost analysis of the compiled step."""
        b, n = self.global_batch, self.mesh.size
        out = {
            "steps_per_second": steps / seconds,
            "images_per_second": steps * b / seconds,
            "images_per_second_per_device": steps * b / seconds / n,
        }
        peak = self.config.train.peak_flops_per_device
        if self.flops_per_step and peak > 0:
            out["mfu"] = self.flops_per_step * steps / seconds / (peak * n)
        return out

    def _measure_flops(self) -> None:
        """XLA's FLOP count of the compiled step (for MFU), on the first batch as the loop
        gets it."""
        local = next(self.input.batches(0, 0))
        cost = self.program.train_step.lower(
            self.state, self.on_device, devices.global_batch(local, self.mesh)
        ).cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        self.flops_per_step = float((cost or {}).get("flops", 0.0)) or None
        self.say(f"model FLOPs per step (XLA cost analysis): {self.flops_per_step or 0:.3g}")

    def close(self) -> None:
        if self._grid is not None:
            self._grid.close()
        self.progress.close()
        self.ckpts.wait()
        self.ckpts.close()
        self.log.close()

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict | None:
        """Trains to the end (or to a halt/stop), then reports the best checkpoint on test.
        Returns the test report, or None when halted early (train.halt_after_steps)."""
        self.step = int(fetch(self.state.step))
        if self.config.train.peak_flops_per_device > 0 and self.step < self.total_steps:
            self._measure_flops()
        self.rollbacks = 0
        self.first_step_pending = True
        self.t_saved = time.time()
        halt = self.config.train.halt_after_steps
        if self.program.ahead is not None:  # the step compiled during the set-up
            self.clock.enter("compile")
            if self.is_main:  # matplotlib's import beside the compilation, off the report's path
                preload("ferjax.evaluation.plots")
            self.program.ahead.wait()
        self.clock.enter("steps")
        with StopSignal() as stop:
            while self.step < self.total_steps and not self._stop_early():
                if self._run_epoch(stop) == "rolled back":
                    continue
                if stop.requested(sync=True):
                    self.close()
                    raise Preempted(
                        f"stopped by signal at step {self.step}; checkpoint saved, re-run the "
                        "same command to resume"
                    )
                if halt and self.step >= halt:
                    self.close()
                    self.say(
                        f"halted at step {self.step} (train.halt_after_steps); re-run to resume"
                    )
                    return None
        return self._test()

    def _stop_early(self) -> bool:
        """Early stopping, checked before each epoch (so a resumed run stops where it would
        have)."""
        if not self._patience_exhausted():
            return False
        self.say(
            f"early stop at epoch {self.step // self.steps_per_epoch}: "
            f"{self.config.train.best_metric} has not improved for "
            f"{self.config.train.patience} epochs (best at step {self.meta['best_step']})"
        )
        return True

    def _patience_exhausted(self) -> bool:
        """train.patience: no improvement of the best metric for that many epochs (a function
        of the checkpointed best step, so a resumed run decides the same)."""
        patience, best = self.config.train.patience, self.meta["best_step"]
        if not patience or best is None or not self.intervals.end_of_epoch(self.step):
            return False
        return (self.step - best) // self.steps_per_epoch >= patience

    def _run_epoch(self, stop: StopSignal) -> str:
        """The rest of the current epoch: "done", "stopped" (signal or halt, checkpointed) or
        "rolled back" (to the last checkpoint after a non-finite step)."""
        epoch = self.step // self.steps_per_epoch
        start = self.step - epoch * self.steps_per_epoch
        t_epoch = time.time()
        self.progress.begin_epoch(epoch, start)
        self.sums, self.window_steps, self.t_window = None, 0, time.time()
        halt = self.config.train.halt_after_steps
        for local in self.input.batches(epoch, start):
            where(self.step + 1, "train step")
            self.state, metrics = self.program.train_step(
                self.state, self.on_device, devices.global_batch(local, self.mesh)
            )
            self.step += 1
            self.window_steps += 1
            if self.first_step_pending:
                self._time_first_step(metrics)
            self.sums = accumulate(self.sums, metrics)
            self.progress.step(metrics, fetch)
            end = self.intervals.end_of_epoch(self.step)
            save = self.intervals.save_due(self.step, time.time() - self.t_saved)
            sync = self.intervals.sync_point(self.step)
            where(self.step, "agreeing on a stop signal (all-gather)")
            stopping = stop.requested(sync) or bool(halt and self.step >= halt)
            # A log point right after an epoch end would log a window of a step or two (a
            # jagged curve): such short windows are folded into the next one.
            short = 0 < 2 * self.window_steps < self.intervals.log_every
            if (sync and not short) or end or save or stopping:
                if self._log_window() == "rolled back":
                    return "rolled back"
            if (save or stopping) and not end:
                where(self.step, "saving the latest checkpoint")
                self.clock.enter("checkpoints")
                self.ckpts.save_latest(self.step, self.state, self.meta_at(self.step))
                self.t_saved = time.time()
                self.clock.enter("steps")
            if stopping and not end:
                return "stopped"
        if self.intervals.end_of_epoch(self.step):
            self._end_epoch(t_epoch)
        return "done"

    def _time_first_step(self, metrics) -> None:
        """Waits for the first step once and says how long tracing, compiling and running
        took (bench/startup.py reads this line). The throughput window starts after it."""
        t_run = time.time()
        jax.block_until_ready(metrics)
        now = time.time()
        self.say(
            f"first train step done: traced and compiled in {t_run - self.t_window:.1f}s, "
            f"ran in {now - t_run:.1f}s"
        )
        self.clock.mark("first_step")
        self.first_step_pending = False
        if self._grid is not None:
            self._grid.start()  # after the step's compilation, at the lowest priority
        self.window_steps, self.t_window = 0, now  # the first step is not in the window

    def _log_window(self) -> str:
        """At a sync point: read the metric sums, stop or roll back on a non-finite step, log
        loss/accuracy/learning rate and the window's throughput. "rolled back" or "ok"."""
        where(self.step, "reading the metrics")
        sums, lr_scale = fetch((self.sums, self.state.lr_scale))
        now = time.time()
        bad = min(int(sums["bad_loss_step"]), int(sums["bad_grad_step"]))
        if bad != NEVER:
            what = "loss" if int(sums["bad_loss_step"]) == bad else "gradient"
            return self._non_finite(what, bad)
        self.progress.train_window(sums, self.window_steps, now - self.t_window)
        if sums["count"] > 0:
            scalars = {
                "loss": sums["loss_sum"] / sums["count"],
                "accuracy": sums["correct"] / sums["count"],
                "learning_rate": float(self.program.schedule(self.step - 1)) * float(lr_scale),
            }
            if self.window_steps > 0:
                scalars.update(self.throughput(self.window_steps, max(now - self.t_window, 1e-9)))
            self.log.write(self.step, "train", scalars)
        self.sums, self.window_steps, self.t_window = None, 0, time.time()
        return "ok"

    def _non_finite(self, what: str, bad: int) -> str:
        """A non-finite loss/gradient at step `bad` (the state was left untouched): roll back
        to the last checkpoint with a lower learning rate (train.on_nan=rollback, at most
        MAX_ROLLBACKS times), else stop with TrainingDiverged."""
        good = self.ckpts.latest.latest_step()
        config = self.config.train
        if config.on_nan == "rollback" and good is not None and self.rollbacks < MAX_ROLLBACKS:
            self.rollbacks += 1
            self.ckpts.wait()
            state, _ = self.ckpts.restore_latest(self.state)
            self.state = state.replace(lr_scale=state.lr_scale * config.nan_lr_factor)
            self.step, self.sums = int(fetch(self.state.step)), None
            scale = float(fetch(self.state.lr_scale))
            self.progress.close()
            self.say(
                f"warning: non-finite {what} at step {bad}; rolled back to step {self.step} "
                f"with learning-rate scale {scale:g}"
            )
            return "rolled back"
        self.close()
        raise TrainingDiverged(
            f"non-finite {what} at step {bad}; training stopped, the last good checkpoint is "
            f"step {good} in {self.ckpts.latest.directory}"
        )

    def _end_epoch(self, t_epoch: float) -> None:
        """Validation, best/latest checkpoints, the epoch's summary line."""
        where(self.step, "validation")
        self.clock.enter("eval")
        variables = self.state.eval_variables()
        probs = self._predict(variables, self.val_images, len(self.val))
        tau = self.fixed_tau
        if tau:
            probs = adjust_logits(probs, self.prior, tau)
        report = report_with_loss(self.val.labels, probs, self.data.class_names, "val")
        self.log.write(self.step, "val", report_scalars(report))
        value = report[self.config.train.best_metric]
        where(self.step, "saving the epoch's checkpoints")
        self.clock.enter("checkpoints")
        if is_better(self.config.train.best_metric, value, self.meta["best_value"]):
            self.meta["best_value"], self.meta["best_step"] = value, self.step
            self.ckpts.save_best(self.step, self.state, self.meta_at(self.step))
        self.ckpts.save_latest(self.step, self.state, self.meta_at(self.step))
        self.t_saved = time.time()
        self.clock.enter("report")
        if self.is_main:
            summaries.write_confusion_matrix(self.log.writer, self.step, report)
        self.progress.end_epoch(self.step, report, time.time() - t_epoch)
        self.t_window = time.time()  # evaluation and checkpointing are not step time
        self.clock.enter("steps")

    def _predict(self, variables, images, num: int) -> np.ndarray:
        return predict_split(
            self.program.predict,
            variables,
            images,
            num,
            self.config.train.eval_batch_size,
            self.mesh,
            memory_budget_mb=self.config.eval.memory_budget_mb,
            cache=self.eval_programs,
        )

    @property
    def prior(self) -> np.ndarray:
        """float64[K]: the class prior of the training records (after sampling)."""
        return np.asarray(self.program.spec.prior, np.float64)

    @property
    def fixed_tau(self) -> float:
        """eval.logit_adjust_tau as a number (0 for "auto", which is decided at the end)."""
        setting = adjust_tau_setting(self.config)
        return 0.0 if setting in ("", "auto") else float(setting)

    def _test(self) -> dict:
        """The best checkpoint on the test split: report.json, figures, one summary line."""
        where(self.step, "waiting for the checkpoints, test evaluation")
        self.clock.enter("checkpoints")
        self.ckpts.wait()
        state = self.state
        if self.ckpts.best.latest_step() is not None:
            state, _ = self.ckpts.restore_best(state)
        self.ckpts.close()
        self.progress.close()
        self.clock.enter("eval")
        variables = state.eval_variables()
        tau, chosen_on = self.fixed_tau, None
        if adjust_tau_setting(self.config) == "auto":
            val_probs = self._predict(variables, self.val_images, len(self.val))
            tau = choose_tau(self.val.labels, val_probs, self.prior, self.config.train.best_metric)
            chosen_on = "val"
            self.say(f"post-hoc logit adjustment: tau {tau:g} chosen on the validation split")
        test_images = devices.replicate(self.test.images, self.mesh)
        probs = self._predict(variables, test_images, len(self.test))
        if tau:
            probs = adjust_logits(probs, self.prior, tau)
        self.clock.enter("report")
        report = report_with_loss(self.test.labels, probs, self.data.class_names, "test")
        report["tta"] = self.config.eval.tta
        report["logit_adjustment"] = {
            "tau": tau,
            "chosen_on": chosen_on,
            "prior": dict(zip(self.data.class_names, map(float, self.prior), strict=True)),
        }
        report["ema"] = bool(self.state.ema)
        if self.is_main:
            self.workdir.write_json(LOGIT_ADJUSTMENT, report["logit_adjustment"])
        report["checkpoint_step"] = int(fetch(state.step))
        self.log.write(report["checkpoint_step"], "test", report_scalars(report))
        if self.is_main:
            summaries.write_confusion_matrix(self.log.writer, report["checkpoint_step"], report)
        self.log.close()
        if self.is_main:
            with open(self.workdir.final_report, "w") as f:
                json.dump(report, f, indent=2)
            self.clock.enter("figures")
            from ferjax.evaluation import plots  # matplotlib: imported during the compilation

            plots.training_curves(self.log.path, self.workdir.figure("training_curves"))
            plots.report_figures(self.workdir, report, self.test, probs)
            self.clock.enter("report")
            print(
                f"test accuracy {report['accuracy']:.4f} balanced "
                f"{report['balanced_accuracy']:.4f} macro-F1 {report['macro_f1']:.4f} -> "
                f"{self.workdir.final_report}",
                flush=True,
            )
        self._account()
        return report

    def _account(self) -> None:
        """The run's wall clock by phase: one line, and time.json in the workdir."""
        account = self.clock.account()
        if self.is_main:
            self.workdir.write_json(TIME_ACCOUNT, account)
            if self.config.train.verbosity > 0:
                print(self.clock.summary(account), flush=True)
        self.clock.close()


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, data: FerData, clock: Clock | None = None
) -> dict | None:
    """Trains on `data`, resuming from the workdir's latest checkpoint, then evaluates the best
    checkpoint on the test split. Returns the test report (None if halted early). `clock`: the
    account of the run's wall clock (default: one started here)."""
    return Trainer(config, workdir, data, clock).run()
