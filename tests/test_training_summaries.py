"""The grid of augmented inputs computed in the background: nothing before the first step, at
the lowest priority, written to TensorBoard by the metric log (at a write once ready, or when
it closes)."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
from conftest import tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ferjax.runtime.workdir import Workdir
from ferjax.training import summaries
from ferjax.training.logs import MetricLog


def _images():
    return np.random.default_rng(0).integers(0, 256, (40, 16, 16, 1)).astype(np.uint8)


def _grid_tags(path) -> list:
    acc = EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    return [t for t in acc.Tags()["tensors"] if t == "inputs/augmented"]


def test_the_grid_waits_for_start_and_is_written_when_the_log_closes(tmp_path, monkeypatch):
    config = tiny_config(data__image_size=16, augment__ops="flip|shift(pad=2)")
    calls = []
    real = summaries.augmented_samples

    def spy(images, cfg, count=32):
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        calls.append((threading.current_thread().name, nice))
        return real(images, cfg, count)

    monkeypatch.setattr(summaries, "augmented_samples", spy)
    grid = summaries.AugmentedGrid(_images(), config)
    log = MetricLog(Workdir(str(tmp_path)), None, grid.write)
    log.write(1, "train", {"loss": 1.0})
    assert calls == [] and log.pending is not None  # not started: nothing computed or written
    grid.start()
    log.close()  # waits for the grid and writes it
    grid.close()
    assert len(calls) == 1 and calls[0][0].startswith("ferjax-grid")
    if sys.platform == "linux":
        assert calls[0][1] == 19  # the helper thread alone was lowered
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19
    assert grid.written and _grid_tags(tmp_path) == ["inputs/augmented"]


def test_a_grid_never_started_is_not_waited_for(tmp_path):
    """A run stopped before its first step: the log closes without the grid."""
    grid = summaries.AugmentedGrid(_images(), tiny_config(data__image_size=16))
    log = MetricLog(Workdir(str(tmp_path)), None, grid.write)
    log.write(1, "train", {"loss": 1.0})
    log.close()
    grid.close()
    assert not grid.written and _grid_tags(tmp_path) == []


def test_a_ready_grid_is_written_at_the_next_write(tmp_path):
    grid = summaries.AugmentedGrid(_images(), tiny_config(data__image_size=16))
    grid.start()
    grid._future.result()  # computed
    log = MetricLog(Workdir(str(tmp_path)), None, grid.write)
    log.write(1, "train", {"loss": 1.0})
    assert grid.written and log.pending is None
    log.close()
    grid.close()
    assert _grid_tags(tmp_path) == ["inputs/augmented"]
