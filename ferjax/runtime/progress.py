"""What the training loop tells the person watching it.

On an interactive terminal: a tqdm bar per epoch (steps, images/s, loss, ETA). Otherwise (CI,
cluster logs, `> train.log`): a plain line every `train.progress_seconds`. Always: one summary
line per epoch. Only process 0 prints. `train.verbosity`: 0 quiet (errors, warnings and the
final test line), 1 default, 2 verbose (per-class precision too, and more frequent log lines).
"""

from __future__ import annotations

import sys
import time

import jax


def duration(seconds: float) -> str:
    """m:ss or h:mm:ss."""
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Per-epoch progress. The loop calls begin_epoch, step (every step), train_window (with
    host copies of the metric sums it already fetched), end_epoch and close; `print` writes a
    line above the bar (tqdm.write) so that log lines never break it.

    Reading the loss of a step forces a device sync, so it is done at most once per refresh
    interval (0.5 s on a terminal), never per step. The img/s shown is measured between two
    such syncs: steps finished over time taken, not the speed at which steps were dispatched.
    """

    def __init__(
        self,
        num_epochs: int,
        steps_per_epoch: int,
        batch_size: int,
        verbosity: int = 1,
        log_seconds: float = 30.0,
        stream=None,
        is_main: bool | None = None,
    ):
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.verbosity = verbosity
        self.stream = stream if stream is not None else sys.stdout
        main = jax.process_index() == 0 if is_main is None else is_main
        self.enabled = main and verbosity > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.5 if self.tty else (log_seconds / 3 if verbosity >= 2 else log_seconds)
        self.bar = None
        self.sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}

    def print(self, line: str) -> None:
        """A line that does not break the bar (tqdm.write on a terminal)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def begin_epoch(self, epoch: int, step_in_epoch: int) -> None:
        self.epoch, self.done = epoch, step_in_epoch
        self.t_last = time.time()
        self.last_done = step_in_epoch
        self.loss = None
        self.synced = False  # no sync yet in this epoch: the first one may include compilation
        self.sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        self.rate = None
        if self.enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.steps_per_epoch,
                initial=step_in_epoch,
                desc=f"epoch {epoch + 1}/{self.num_epochs}",
                unit="step",
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
                mininterval=0,  # step() already limits refreshes to one per interval
                miniters=1,
            )

    def step(self, metrics, fetch=jax.device_get) -> None:
        """After each train step; `metrics` are that step's on-device sums, read with `fetch`
        at most once per refresh interval."""
        self.done += 1
        if not self.enabled:
            return
        if time.time() - self.t_last < self.interval and self.done < self.steps_per_epoch:
            return
        m = fetch(metrics)  # the only sync, once per interval: the step has now finished
        now = time.time()
        if float(m["count"]) > 0:
            batch_loss = float(m["loss_sum"]) / float(m["count"])
            self.loss = batch_loss if self.loss is None else 0.7 * self.loss + 0.3 * batch_loss
        if self.synced:
            steps = self.done - self.last_done
            self.rate = steps * self.batch_size / max(now - self.t_last, 1e-9)
        self.synced = True
        self.t_last, self.last_done = now, self.done
        self._show(now)

    def _show(self, now: float) -> None:
        loss = "?" if self.loss is None else f"{self.loss:.4f}"
        rate = "? img/s" if self.rate is None else f"{self.rate:,.0f} img/s"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate} loss {loss}", refresh=False)
            self.bar.update(self.done - self.bar.n)
        elif self.done < self.steps_per_epoch:
            left = self.steps_per_epoch - self.done
            eta = duration(left * self.batch_size / self.rate) if self.rate else "?"
            print(
                f"epoch {self.epoch + 1}/{self.num_epochs} step {self.done}/{self.steps_per_epoch} "
                f"({100 * self.done / self.steps_per_epoch:.0f}%) {rate} loss {loss} eta {eta}",
                file=self.stream,
                flush=True,
            )

    def train_window(self, sums: dict, steps: int = 0, seconds: float = 0.0) -> None:
        """Host copies of the loop's metric sums over the `steps` steps (taking `seconds`)
        since its last log write; updates the shown img/s too."""
        for k in self.sums:
            self.sums[k] += float(sums[k])
        if steps > 0 and seconds > 0:
            self.rate = steps * self.batch_size / seconds

    def end_epoch(self, step: int, report: dict, seconds: float) -> None:
        """The epoch summary: train loss/accuracy, validation metrics, per-class recall, time."""
        self.close_bar()
        if not self.enabled:
            return
        s = self.sums
        train = (
            f"train loss {s['loss_sum'] / s['count']:.4f} acc {s['correct'] / s['count']:.4f} | "
            if s["count"]
            else ""
        )
        per_class = report["per_class"]
        recalls = " ".join(f"{n}={m['recall']:.2f}" for n, m in per_class.items())
        line = (
            f"epoch {self.epoch + 1}/{self.num_epochs} step {step}: {train}"
            f"val acc {report['accuracy']:.4f} balanced {report['balanced_accuracy']:.4f} "
            f"macro-F1 {report['macro_f1']:.4f} loss {report['loss']:.4f} | "
            f"recall {recalls} | {seconds:.1f}s"
        )
        if self.verbosity >= 2:
            precisions = " ".join(f"{n}={m['precision']:.2f}" for n, m in per_class.items())
            line += f" | precision {precisions} | ece {report.get('ece', 0.0):.4f}"
        print(line, file=self.stream, flush=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
