"""The tools on a run: TensorBoard files and figures of training, evaluate, predict, compare.
The tests that need a finished training run share one tiny run (slow); predict reads a run
written without training (conftest.untrained_run), and compare reads report files."""

import json
import os

import numpy as np
import pytest
from conftest import cli
from PIL import Image


@pytest.fixture(scope="module")
def workdir(tiny_run):
    return tiny_run


# ------------------------------------------------------------------------------- TensorBoard


@pytest.mark.slow
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


@pytest.mark.slow
def test_figures_written_at_end_of_training(workdir):
    from ferjax.evaluation import plots

    px = lambda size: (round(size[0] * plots.DPI), round(size[1] * plots.DPI))  # noqa: E731
    assert _png_size(workdir / "training_curves.png") == (1100, 400)
    assert _png_size(workdir / "confusion_matrix.png") == (1300, 650)
    assert _png_size(workdir / "per_class.png") == px(plots.bars_size(7))
    assert _png_size(workdir / "reliability.png") == px(plots.RELIABILITY_SIZE)
    assert _png_size(workdir / "mistakes.png") == px(plots.mistakes_size(24))


def test_confident_mistakes_order():
    from ferjax.evaluation.plots import confident_mistakes

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    idx, conf = confident_mistakes(np.array([1, 1, 1, 0]), probs)
    assert idx.tolist() == [0, 3, 2] and conf.tolist() == [0.9, 0.7, 0.6]


# ------------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_reproduces_training_report(workdir, capsys):
    from ferjax.cli.evaluate import main

    assert main(["--workdir", str(workdir), "--no_figures"]) == 0
    final = json.loads((workdir / "report.json").read_text())
    again = json.loads((workdir / "report_test.json").read_text())
    assert {k: again[k] for k in final} == final
    assert again["checkpoint"] == "best"
    out = capsys.readouterr().out
    assert f"accuracy {final['accuracy']:.4f}" in out and "happy" in out


@pytest.mark.slow
def test_evaluate_other_split_and_data_file(workdir, tmp_path, capsys):
    from ferjax.cli.evaluate import evaluate
    from ferjax.data.sources.fer2013 import write_fer2013_csv
    from ferjax.data.sources.synthetic import make_synthetic

    # The run's own val split, with flip TTA and the latest checkpoint.
    report, path = evaluate(str(workdir), "val", "flip", "latest", figures=True)
    assert report["split"] == "val" and report["tta"] == "flip" and report["examples"] == 64
    assert path == str(workdir / "report_val.json") and os.path.exists(path)
    assert (workdir / "reliability_val.png").exists()
    # Another data file: a FER2013 CSV of other procedural faces. Its files are named after it,
    # so the run's own report_test.json is never overwritten.
    csv = tmp_path / "other.csv"
    write_fer2013_csv(str(csv), make_synthetic(40, 20, 30, seed=5))
    before = sorted(p.name for p in workdir.iterdir())
    report, path = evaluate(str(workdir), "test", data_path=str(csv), data_name="fer2013")
    assert report["examples"] == 30 and report["data"].endswith("other.csv")
    assert path == str(workdir / "report_test_other.json")
    new = sorted(set(p.name for p in workdir.iterdir()) - set(before))
    assert new == [
        "confusion_matrix_test_other.png",
        "mistakes_test_other.png",
        "per_class_test_other.png",
        "reliability_test_other.png",
        "report_test_other.json",
    ]


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    r = cli("evaluate", f"--workdir={tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "config.json: missing" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("compare", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------- predict


def _detected_face(trained):
    """A procedural happy face, upscaled to 160x160 and pasted at (200, 100) into a noisy
    480x360 photo, that the Haar cascade finds (it finds about half of them)."""
    from ferjax.data.sources.synthetic import render_faces
    from ferjax.deploy.faces import detect_faces, face_detector

    rng = np.random.default_rng(0)
    detector = face_detector()
    for face in render_faces(np.full(12, 3), rng):
        up = np.asarray(Image.fromarray(face).resize((160, 160), Image.Resampling.BILINEAR))
        photo = rng.normal(128, 30, (360, 480)).clip(0, 255).astype(np.uint8)
        photo[100:260, 200:360] = up
        if any(_iou(b, (200, 100, 160, 160)) > 0.5 for b in detect_faces(photo, detector)):
            return photo
    pytest.fail("the Haar cascade found none of 12 procedural faces")


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_predict_detects_face_and_label_matches_crop(trained, fresh_run, tmp_path, capsys):
    from ferjax.cli.predict import main
    from ferjax.deploy.faces import crop_face

    photo = _detected_face(trained)
    rgb = np.stack([photo, photo // 2, photo], -1)  # colour, converted to gray like training
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray(np.full((200, 300), 90, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    args = ["--workdir", fresh_run, "--json", "--annotate", str(tmp_path / "ann")]
    files = [str(tmp_path / n) for n in ("photo.png", "blank.png", "broken.jpg")]
    assert main(args + files) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    faces = [r for r in records if r["file"] == files[0]]
    assert faces and max(_iou(f["box"], (200, 100, 160, 160)) for f in faces) > 0.5
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    for f in faces:
        probs = trained.classify(crop_face(gray, f["box"], 0.1, 48)[None])[0]
        assert f["label"] == trained.class_names[int(probs.argmax())]
        assert list(f["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-5)
    assert {"file": files[1], "error": "no face found"} in records
    assert any(r["file"] == files[2] and "cannot read image" in r["error"] for r in records)
    assert "error: " in captured.err and "broken.jpg: cannot read image" in captured.err
    with Image.open(tmp_path / "ann" / "photo_annotated.png") as im:
        assert im.size == (480, 360)


def test_predict_no_detect_and_all_failed(trained, fresh_run, tmp_path, capsys):
    from ferjax.cli.predict import main
    from ferjax.data.sources.synthetic import render_faces

    faces = render_faces(np.array([3, 5]), np.random.default_rng(1))
    Image.fromarray(faces[0]).save(tmp_path / "a.png")
    big = Image.fromarray(faces[1]).resize((96, 96), Image.Resampling.BILINEAR)
    big.save(tmp_path / "b.png")
    assert main(["--workdir", fresh_run, "--no-detect", str(tmp_path / "a.png"),
                 str(tmp_path / "b.png")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    expected = trained.classify(
        np.stack([faces[0], np.asarray(big.resize((48, 48), Image.Resampling.BILINEAR))])[..., None]
    )
    for line, probs, size in zip(lines, expected, (48, 96)):
        label = trained.class_names[int(probs.argmax())]
        assert f"face 1 box=0,0,{size},{size} {label} {probs.max():.2f}" in line
    (tmp_path / "c.png").write_bytes(b"")
    assert main(["--workdir", fresh_run, str(tmp_path / "c.png")]) == 1


# ------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_savedmodel_matches_jax(trained, tmp_path):
    from ferjax.deploy.serving import check_images, export_savedmodel, savedmodel_probs

    out = export_savedmodel(trained, str(tmp_path / "sm"))
    images = check_images(trained, 5)
    got = savedmodel_probs(out, images)
    want = trained.classify(images)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert (tmp_path / "sm" / "labels.txt").read_text().split() == list(trained.class_names)


# ------------------------------------------------------------------------------- compare


def test_compare_table_and_plot(tmp_path, capsys):
    from ferjax.cli.compare import main
    from ferjax.data.dataset import FER2013_CLASSES
    from ferjax.evaluation.metrics import classification_report

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 64)
    report = classification_report(labels, rng.dirichlet(np.ones(7), 64), FER2013_CLASSES, "test")
    report["loss"] = 1.9
    other = json.loads(json.dumps(report))
    other["accuracy"] = 0.99
    other["per_class"]["sad"]["recall"] = 0.75
    for name, r in (("a", report), ("b", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "0.9900*" in text and "0.7500*" in text and "recall sad" in text and "f1 happy" in text
    assert _png_size(tmp_path / "a" / "comparison.png")[0] >= 800  # in the first run's workdir
