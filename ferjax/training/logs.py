"""The metric log of a run: metrics.jsonl (appended and flushed at every write, so it survives a
kill) and TensorBoard event files (ferjax.training.tensorboard, no TensorFlow)."""

from __future__ import annotations

import json
from collections.abc import Callable

import jax

from ferjax.runtime.workdir import METRICS, Workdir
from ferjax.training.tensorboard import EventWriter, NullWriter


class MetricLog:
    """`write(step, split, scalars)` to metrics.jsonl (process 0) and TensorBoard.

    The TensorBoard writer is created at the first write, after the first train step has been
    dispatched, together with the run-start summaries given as `on_open(writer)`. `pending(
    writer, wait) -> done`: a summary computed in the background (summaries.AugmentedGrid.write),
    offered the writer at every write until it is done and waited for at close."""

    def __init__(
        self, workdir: Workdir, on_open: Callable | None = None, pending: Callable | None = None
    ):
        self.workdir = workdir
        self.on_open = on_open
        self.pending = pending
        self.is_main = jax.process_index() == 0
        self._writer = None
        self.path = workdir.file(METRICS)

    @property
    def writer(self):
        if self._writer is None:
            self._writer = EventWriter(self.workdir.path) if self.is_main else NullWriter()
            if self.on_open is not None:
                self.on_open(self._writer)
        return self._writer

    def write(self, step: int, split: str, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, {f"{split}/{k}": v for k, v in scalars.items()})
        if self.pending is not None and self.pending(self.writer, False):
            self.pending = None
        if self.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")

    def close(self) -> None:
        if self._writer is not None and self.pending is not None:
            self.pending(self._writer, True)
            self.pending = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
