"""Using a trained model: progress output, TensorBoard, figures, evaluate, predict, export,
compare. One tiny run is trained once per module and shared by every test."""

import io

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from ferjax.errors import ConfigError


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from ferjax.main import run

    path = tmp_path_factory.mktemp("run")
    run(tiny_config(train__num_epochs=1, train__verbosity=0), str(path))
    return path


@pytest.fixture(scope="module")
def trained(workdir):
    from ferjax.inference import load_run

    return load_run(str(workdir))


# ------------------------------------------------------------------------------- progress


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
    from ferjax.progress import Progress

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
    from ferjax.progress import Progress

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
    from ferjax.config import validate

    with pytest.raises(ConfigError, match=f"train.{key}"):
        validate(tiny_config(**{f"train__{key}": value}))


# ------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for tag in (
        "train/loss",
        "train/accuracy",
        "train/learning_rate",
        "train/images_per_second",
        "val/accuracy",
        "val/balanced_accuracy",
        "val/macro_f1",
        "val/recall_happy",
        "test/accuracy",
    ):
        assert tag in tags, tag
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    for tag in ("inputs/augmented", "val/confusion_matrix", "test/confusion_matrix"):
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "images", tag
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    # The image summary holds [width, height, PNG]; the augmented grid is 8 faces wide.
    width, height, png = acc.Tensors("inputs/augmented")[0].tensor_proto.string_val
    assert int(width) == 8 * 50 + 2 and int(height) == 4 * 50 + 2 and png[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------- figures


def _png_size(path):
    assert path.stat().st_size > 2000, path
    with Image.open(path) as im:
        return im.size


def test_figures_written_at_end_of_training(workdir):
    from ferjax import plots

    px = lambda size: (round(size[0] * plots.DPI), round(size[1] * plots.DPI))  # noqa: E731
    assert _png_size(workdir / "training_curves.png") == (1100, 400)
    assert _png_size(workdir / "confusion_matrix.png") == (1300, 650)
    assert _png_size(workdir / "per_class.png") == px(plots.bars_size(7))
    assert _png_size(workdir / "reliability.png") == px(plots.RELIABILITY_SIZE)
    assert _png_size(workdir / "mistakes.png") == px(plots.mistakes_size(24))


def test_confident_mistakes_order():
    from ferjax.plots import confident_mistakes

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    idx, conf = confident_mistakes(np.array([1, 1, 1, 0]), probs)
    assert idx.tolist() == [0, 3, 2] and conf.tolist() == [0.9, 0.7, 0.6]
