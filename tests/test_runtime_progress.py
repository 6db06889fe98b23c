"""ferjax.runtime.progress: the console lines and bar of a training run."""

import io

import numpy as np
import pytest
from conftest import tiny_config

from ferjax.runtime.errors import ConfigError


def _fake_metrics(loss=2.0, count=32.0):
    return {"loss_sum": np.float32(loss * count), "correct": np.float32(8), "count": count}


def _report():
    per = {n: {"precision": 0.5, "recall": 0.25, "f1": 0.3, "support": 3} for n in ("happy", "sad")}
    return {
        "accuracy": 0.5,
        "balanced_accuracy": 0.25,
        "macro_f1": 0.3,
        "loss": 1.5,
        "ece": 0.1,
        "per_class": per,
    }


def test_progress_plain_lines_and_epoch_summary():
    from ferjax.runtime.progress import Progress

    out = io.StringIO()
    p = Progress(2, 4, 32, verbosity=1, log_seconds=1e-6, stream=out, is_main=True)
    p.begin_epoch(0, 0)
    for _ in range(4):
        p.step(_fake_metrics())
    p.train_window({"loss_sum": 256.0, "correct": 64.0, "count": 128.0})
    p.end_epoch(4, _report(), 1.25)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/2 step 1/4 (25%)") and "img/s loss 2.0000" in lines[0]
    assert "eta" in lines[1]
    assert lines[-1] == (
        "epoch 1/2 step 4: train loss 2.0000 acc 0.5000 | val acc 0.5000 balanced 0.2500 "
        "macro-F1 0.3000 loss 1.5000 | recall happy=0.25 sad=0.25 | 1.2s"
    )


def test_progress_bar_on_tty_quiet_and_verbose():
    from ferjax.runtime.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    p = Progress(1, 3, 32, verbosity=1, stream=tty, is_main=True)
    p.begin_epoch(0, 0)
    for _ in range(3):
        p.step(_fake_metrics())
    p.end_epoch(3, _report(), 1.0)
    text = tty.getvalue()
    assert "\r" in text and "3/3" in text and "img/s loss 2.0000" in text
    assert text.rstrip().splitlines()[-1].startswith("epoch 1/1 step 3: val acc 0.5000")

    quiet = io.StringIO()
    p = Progress(1, 3, 32, verbosity=0, log_seconds=1e-6, stream=quiet, is_main=True)
    p.begin_epoch(0, 0)
    p.step(_fake_metrics())
    p.end_epoch(3, _report(), 1.0)
    assert quiet.getvalue() == ""

    verbose = io.StringIO()
    p = Progress(1, 3, 32, verbosity=2, stream=verbose, is_main=True)
    p.begin_epoch(0, 0)
    p.end_epoch(3, _report(), 1.0)
    assert "precision happy=0.50" in verbose.getvalue() and "ece 0.1000" in verbose.getvalue()

    other_process = io.StringIO()
    p = Progress(1, 3, 32, verbosity=2, stream=other_process, is_main=False)
    p.begin_epoch(0, 0)
    p.end_epoch(3, _report(), 1.0)
    assert other_process.getvalue() == ""


@pytest.mark.parametrize("key,value", [("verbosity", 3), ("progress_seconds", 0.0)])
def test_progress_config_validated(key, value):
    from ferjax.config.validate import validate

    with pytest.raises(ConfigError, match=f"train.{key}"):
        validate(tiny_config(**{f"train__{key}": value}))
