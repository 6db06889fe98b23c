"""ONNX export of every model ferjax trains (grayscale and colour) against JAX with ONNX Runtime,
int8 quantisation (TFLite and ONNX) and its report, and the model card every export writes.

Fast tier: the division-free standardisation of the int8 graphs, the model card from a run's
reports, the one-line errors. Slow (every conversion loads jax2onnx, ~9 s, and the fast tier must
stay under 3 minutes): every model's ONNX export in grayscale and colour (dynamic batch, labels,
metadata), per-image standardisation in ONNX, and the int8 exports on a trained tiny run."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import call_tool, tiny_config, untrained_run

from ferjax.deploy.inference import load_run
from ferjax.deploy.serving import check_images, export

MODELS = {
    "cnn": {},
    "resnet18": {"model__width": 16},
    "resnet34": {"model__width": 8, "model__stem": "imagenet"},  # the padded max-pool stem
    "vgg16": {},
    "resnet50": {},
}
CASES = [
    pytest.param(name, channels, marks=pytest.mark.slow) for name in MODELS for channels in (1, 3)
]


def _run(tmp_path, name="cnn", channels=1, **overrides):
    config = tiny_config(model__name=name, data__channels=channels, **MODELS[name], **overrides)
    return load_run(untrained_run(tmp_path / "run", config), conv_impl="xla")


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    """The tiny grayscale CNN, untrained, (mean, std) normalisation."""
    return _run(tmp_path_factory.mktemp("gray"))


@pytest.fixture(scope="module")
def per_image_run(gray_run, tmp_path_factory):
    """The same run with per-image standardisation (as configs/demo.py trains)."""
    workdir = str(tmp_path_factory.mktemp("per_image") / "run")
    shutil.copytree(gray_run.workdir.path, workdir)
    path = os.path.join(workdir, "model_info.json")
    with open(path) as f:
        info = json.load(f)
    info["normalization"] = {"mean": None, "std": None}
    with open(path, "w") as f:
        json.dump(info, f)
    return load_run(workdir, conv_impl="xla")


@pytest.mark.parametrize("name,channels", CASES)
def test_onnx_matches_jax(name, channels, tmp_path):
    import onnx

    from ferjax.deploy.onnx_export import onnx_probs, session

    trained = _run(tmp_path, name, channels, eval__tta="flip")
    out = str(tmp_path / "export" / "model.onnx")
    images = check_images(trained, 12, seed=3)
    diff = export(trained, "onnx", out, images=images)
    assert diff <= 1e-4
    want = trained.classify(images)
    # The batch is dynamic: one session answers 1, 5 and 12 faces alike.
    sess = session(out)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [48, 48, channels])
    assert isinstance(inp.shape[0], str) and outp.shape[1:] == [7]
    for chunk in (1, 5, 12):
        got = onnx_probs(out, images, chunk=chunk)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    labels = (tmp_path / "export" / "labels.txt").read_text().split()
    assert labels == list(trained.class_names)
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["class_names"].split(",") == list(trained.class_names)
    assert f"uint8[batch, 48, 48, {channels}]" in props["input"]


@pytest.mark.slow
def test_onnx_per_image_normalisation(per_image_run, tmp_path):
    from ferjax.deploy.onnx_export import onnx_probs

    trained = per_image_run
    assert trained.info.normalization == (None, None)
    out = str(tmp_path / "m.onnx")
    images = check_images(trained, 8)
    images[0] = 7  # a flat face: std 0, the max(std, 1) floor
    assert export(trained, "onnx", out, images=images) <= 1e-4
    np.testing.assert_allclose(onnx_probs(out, images), trained.classify(images), atol=1e-4)


def test_quantizable_standardisation_equals_training(per_image_run, gray_run):
    from ferjax.deploy.quantize import quantizable

    trained = per_image_run
    q = quantizable(trained)
    assert q.info.normalization == (0.0, 1.0) and q is not trained
    images = check_images(trained, 16)
    images[0] = 7  # a flat face: std 0, the max(std, 1) floor
    np.testing.assert_allclose(q.classify(images), trained.classify(images), atol=1e-5, rtol=0)
    assert quantizable(gray_run) is gray_run  # a (mean, std) normalisation is left as it is


@pytest.mark.slow
def test_tflite_int8_with_per_image_standardisation(per_image_run, tmp_path):
    """The division-free standardisation quantises (training's division made TFLite's int8 DIV
    fail on ordinary faces) and the int8 model stays near the float one."""
    from ferjax.deploy.quantize import export_tflite_int8
    from ferjax.deploy.serving import tflite_probs

    faces = check_images(per_image_run, 64, seed=1)
    out = str(tmp_path / "m_int8.tflite")
    export_tflite_int8(per_image_run, out, faces[:48])
    got = tflite_probs(out, faces[48:])
    want = per_image_run.classify(faces[48:])
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.02)
    assert float(np.max(np.abs(got - want))) < 0.05


def test_missing_extra_is_one_line(monkeypatch):
    import importlib

    from ferjax.deploy import onnx_export

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("onnxruntime"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(onnx_export.MissingExtraError) as e:
        onnx_export.require("onnxruntime.quantization")
    assert str(e.value) == f"ONNX export needs onnxruntime: {onnx_export.EXTRA}"
    assert "[onnx]" in str(e.value) and "\n" not in str(e.value)


def _fake_reports(workdir):
    """report.json, data_report.json and sampling_report.json as a finished run writes them."""
    from ferjax.evaluation.metrics import classification_report

    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 200)
    report = classification_report(labels, rng.dirichlet(np.ones(7), 200), names, "test")
    report.update(ece=0.0731, loss=1.5, tta="none", checkpoint_step=16)
    counts = {n: 100 + 11 * k for k, n in enumerate(names)}
    data = {
        "source": "fer2013.csv",
        "class_names": names,
        "skipped_rows": {"bad pixels": 3},
        "cleaning": {"blank": {"total": 5}, "duplicate": {"total": 9}, "leak": {"total": 2}},
        "splits": {
            s: {"examples": sum(counts.values()), "per_class": counts}
            for s in ("train", "val", "test")
        },
    }
    sampling = {
        "method": "smote",
        "records_per_epoch": 1176,
        "counts_after": dict.fromkeys(names, 168),
    }
    for name, obj in (("report", report), ("data_report", data), ("sampling_report", sampling)):
        with open(os.path.join(workdir, f"{name}.json"), "w") as f:
            json.dump(obj, f)
    return report


def test_model_card_content(tmp_path):
    from ferjax.deploy.card import card_path, write_card

    trained = _run(tmp_path)
    report = _fake_reports(trained.workdir.path)
    out = str(tmp_path / "model.onnx")
    q = {
        "calibration_faces": 300,
        "test_examples": 200,
        "bytes": {"float32": 2747087, "int8": 703507},
        "float32": {"accuracy": 0.819, "balanced_accuracy": 0.7292, "recall": {"angry": 0.8273}},
        "int8": {"accuracy": 0.812, "balanced_accuracy": 0.7239, "recall": {"angry": 0.8777}},
        "accuracy_drop": 0.007,
    }
    export_info = {
        "format": "onnx",
        "file": "model.onnx",
        "batch": "any",
        "check_faces": "64 of the run's test faces",
        "max_difference": 3.1e-6,
        "tolerance": 1e-4,
        "int8": q,
    }
    path = write_card(trained, out, export_info)
    assert path == card_path(out) == out + ".MODEL_CARD.md"
    text = open(path).read()
    # Classes in output order, the input contract and the normalisation.
    assert "0. angry\n1. disgust\n2. fear\n3. happy\n4. sad\n5. surprise\n6. neutral" in text
    assert "uint8 [B, 48, 48, 1]" in text and "(x - 128.0) / 64.0" in text
    # The training data after cleaning and sampling.
    assert "`fer2013.csv`" in text
    assert "| train | 100 | 111 | 122 | 133 | 144 | 155 | 166 | 931 |" in text
    assert "blank 5, duplicate 9, leak 2; unreadable rows skipped: 3" in text
    assert "Sampling `smote`: training records per epoch 1176 (angry 168" in text
    # Test metrics per class and calibration, from report.json.
    assert f"accuracy {report['accuracy']:.4f}, balanced accuracy" in text
    assert "ECE 0.0731" in text
    m = report["per_class"]["sad"]
    assert (
        f"| sad | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        in text
    )
    # The export's measured difference and the int8 cost.
    assert "3.10e-06" in text and "703,507 bytes vs 2,747,087 float32" in text
    assert "accuracy 0.8120 vs 0.8190 float32 (drop +0.0070)" in text
    assert "| angry | 0.8273 | 0.8777 |" in text
    assert "not emotions" in text and "decisions" in text and "demographics" in text


def test_card_of_run_without_reports_says_so(gray_run, tmp_path):
    from ferjax.deploy.card import write_card

    trained = gray_run
    sm = tmp_path / "savedmodel"
    sm.mkdir()
    info = {"format": "savedmodel", "file": "savedmodel", "check_faces": "16 procedural faces"}
    path = write_card(trained, str(sm), {**info, "max_difference": 2e-7, "tolerance": 1e-5})
    assert path == str(sm / "MODEL_CARD.md")
    text = open(path).read()
    assert "`report.json` is missing" in text and "`data_report.json` is missing" in text


def test_export_flag_errors_are_one_line(gray_run, tmp_path, capsys):
    from ferjax.cli.export import main

    w = gray_run.workdir.path
    for argv, words in (
        (["--format", "savedmodel", "--quantize", "int8"], "not savedmodel"),
        (["--format", "onnx", "--max_drop", "2"], "--max_drop: got 2.0"),
        (["--format", "tflite", "--batch_size", "0"], "--batch_size: got 0"),
        (["--format", "pt"], "invalid choice: 'pt'"),
    ):
        assert call_tool(main, ["--workdir", w, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert call_tool(main, ["--workdir", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a directory" in err


# ------------------------------------------------------------------------ int8 (trained run)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_export_report_and_card(fmt, tiny_run, tmp_path, capsys):
    from ferjax.cli.export import main

    out = str(tmp_path / f"model_int8.{fmt}")
    argv = ["--workdir", str(tiny_run), "--format", fmt, "--quantize", "int8", "--out", out]
    assert call_tool(main, [*argv, "--max_drop", "0"]) == 0
    captured = capsys.readouterr()
    q = json.load(open(out + ".json"))
    report = json.load(open(os.path.join(tiny_run, "report.json")))
    # The float model is the run's model: on the whole test split it scores what report.json
    # says JAX scored.
    assert q["test_examples"] == report["examples"] == 64
    assert q["float32"]["accuracy"] == pytest.approx(report["accuracy"], abs=1e-9)
    assert q["float32"]["balanced_accuracy"] == pytest.approx(report["balanced_accuracy"])
    assert set(q["int8"]["recall"]) == set(report["per_class"])
    assert q["calibration_faces"] == 256  # the tiny run's whole training split (< 300)
    assert 0 < q["bytes"]["int8"] < 0.5 * q["bytes"]["float32"]
    assert q["bytes"]["int8"] == os.path.getsize(out)
    assert q["accuracy_drop"] == pytest.approx(q["float32"]["accuracy"] - q["int8"]["accuracy"])
    assert q["max_difference_float32_vs_jax"] <= 1e-4
    # --max_drop 0: a warning line exactly when the int8 model lost accuracy.
    warned = "warning: int8 accuracy drops by" in captured.err
    assert warned == (q["accuracy_drop"] > 0) == q["over_max_drop"]
    assert (tmp_path / "labels.txt").read_text().split() == report["class_names"]
    card = open(out + ".MODEL_CARD.md").read()
    assert f"accuracy {report['accuracy']:.4f}, balanced accuracy" in card
    assert f"accuracy {q['int8']['accuracy']:.4f} vs {q['float32']['accuracy']:.4f}" in card
    assert f"{q['bytes']['int8']:,} bytes" in card
    if fmt == "tflite":  # full integer: every convolution and dense layer takes int8
        from ferjax.runtime.tensorflow import import_tensorflow

        tf = import_tensorflow()
        interp = tf.lite.Interpreter(model_path=out)
        tensors = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
        ops = [
            o for o in interp._get_ops_details() if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED")
        ]
        assert ops and all(tensors[o["inputs"][0]] == np.int8 for o in ops)
        assert interp.get_input_details()[0]["dtype"] == np.uint8
        assert interp.get_output_details()[0]["dtype"] == np.float32


@pytest.mark.slow
def test_cli_onnx_checks_on_run_faces_and_warns(tiny_run, tmp_path, capsys, monkeypatch):
    from ferjax.cli import export as cli_export

    out = str(tmp_path / "m.onnx")
    assert (
        call_tool(cli_export.main, ["--workdir", str(tiny_run), "--format", "onnx", "--out", out])
        == 0
    )
    text = capsys.readouterr().out
    assert "64 of the run's test faces" in text and os.path.isfile(out + ".MODEL_CARD.md")
    # Over --max_drop: one warning line on stderr.
    fake = {
        "float32": {"accuracy": 0.8, "balanced_accuracy": 0.7, "recall": {}},
        "int8": {"accuracy": 0.7, "balanced_accuracy": 0.6, "recall": {}},
        "bytes": {"float32": 400, "int8": 100},
        "accuracy_drop": 0.1,
        "over_max_drop": True,
        "calibration_faces": 256,
        "test_examples": 64,
        "max_difference_float32_vs_jax": 1e-6,
    }
    monkeypatch.setattr(cli_export.quantize, "export_int8", lambda *a, **k: fake)
    argv = ["--workdir", str(tiny_run), "--format", "onnx", "--quantize", "int8", "--out", out]
    assert call_tool(cli_export.main, argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: int8 accuracy drops by 0.1000 (more than --max_drop 0.02)"]
