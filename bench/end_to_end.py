"""End to end: one epoch on FER2013-sized data, from the Kaggle CSV to a tested model.

python -m bench.end_to_end [--model demo_cnn] [--frameworks ferjax,torch] [--train 28709]
                          [--repeats 3] [--caches cold,warm]

Writes procedural faces (FER2013's class proportions; --train training rows plus 3,589
PublicTest and 3,589 PrivateTest rows) as a Kaggle-format fer2013.csv, then runs each framework
in a fresh process and times it from command to exit:

- ferjax: `python -m ferjax.main` on that CSV (cleaning, tf.data index pipeline, on-device
  augmentation, one epoch, validation, checkpoint, test report and plots);
- keras: the seed recipe - parse the CSV, `ImageDataGenerator(rotation_range=10,
  width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True).flow(...)` and
  `model.fit(..., validation_data=...)`, then `model.evaluate` on the test rows;
- torch: the same parse, a DataLoader and the equivalent augmentation (random flip, +-10 degree
  rotation and +-10% shift through affine_grid / grid_sample), then validation and test.

All three train the same model (bench/peers.py builds the Keras and PyTorch versions of ferjax's
model) with SGD (momentum 0.9, Nesterov, weight decay 5e-4), batch 128, float32. Besides the
wall time, each run reports its training-loop time and test accuracy (a sanity check that all
three learn). Every run waits for a quiet machine first (bench.quiet) and records what it saw;
with --repeats N the frameworks run N times in alternating order (A-B-C, C-B-A, ...) and the
median and range of each are reported.

Caches (--caches): `cold` gives every ferjax run a fresh, empty compilation cache and CSV parse
cache (as a first run after install); `warm` shares both across runs, primed by one untimed run
(as every later run). Each ferjax run's own account of its wall clock (time.json: start, data,
sampling, setup, compile, steps, eval, checkpoints, report, figures; ferjax.runtime.clock) is
printed and saved, with `outside` = the command's wall time minus the account's total (process
exit, and the interpreter's start before the account's clock, ~1 s resolution). The CPU model,
its vector flags and the matmul peak are recorded with the ratios (bench/machine.py). Writes
bench/results/end_to_end-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import machine, results_io  # noqa: E402
from bench.quiet import wait_until_quiet  # noqa: E402

BATCH = 128
# model -> ferjax config file
CONFIGS = {
    "demo_cnn": "demo.py",
    "narrow_cnn": "quick.py",
    "cnn": "cnn.py",
    "resnet18": "resnet.py",
}
# ferjax augmentation equivalent to the ImageDataGenerator above (0.1 * 48 px ~ 5 px shifts).
FERJAX_AUGMENT = "flip|shift(pad=5)|rotate(degrees=10)"


def write_csv(path: Path, num_train: int) -> None:
    from ferjax.data.sources.fer2013 import write_fer2013_csv
    from ferjax.data.sources.synthetic import make_synthetic

    write_fer2013_csv(str(path), make_synthetic(num_train, 3589, 3589, seed=0))


# ----------------------------------------------------------------------------- peers


def read_csv(path: str):
    """The seed recipe's parse: one split of the pixel string per row."""
    import csv

    import numpy as np

    usage = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    out = {s: ([], []) for s in usage.values()}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for emotion, pixels, use in reader:
            images, labels = out[usage[use]]
            images.append(np.array(pixels.split(), np.uint8).reshape(48, 48))
            labels.append(int(emotion))
    return {s: (np.stack(i), np.array(lab, np.int64)) for s, (i, lab) in out.items()}


def run_keras(csv_path: str, model_name: str, epochs: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from bench.peers import _keras_model

    tf.config.set_visible_devices([], "GPU")
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    data = read_csv(csv_path)
    t_parse = time.perf_counter() - t0
    (x, y), (xv, yv), (xt, yt) = (data[s] for s in ("train", "val", "test"))
    x, xv, xt = (a[..., None].astype(np.float32) / 255.0 for a in (x, xv, xt))
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError:  # older Keras / tf.keras
        from tensorflow.keras.preprocessing.image import ImageDataGenerator
    gen = ImageDataGenerator(
        rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True
    )
    model = _keras_model(model_name)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    t1 = time.perf_counter()
    model.fit(
        gen.flow(x, y, batch_size=BATCH, seed=0),
        epochs=epochs,
        validation_data=(xv, yv),
        verbose=2,
    )
    t_train = time.perf_counter() - t1
    _, acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
    return {"parse_s": t_parse, "train_s": t_train, "test_accuracy": float(acc)}


def _torch_augment(torch, x):
    """Random horizontal flip, rotation in [-10, 10] degrees and shifts in [-10%, 10%] of a
    [B, 1, H, W] batch, one affine resampling (bilinear, zero fill) per batch."""
    import math

    b = x.shape[0]
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    angle = (torch.rand(b) * 2 - 1) * math.radians(10)
    shift = (torch.rand(b, 2) * 2 - 1) * 0.2  # normalised coords span 2: 10% of the width
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False)


def run_torch(csv_path: str, model_name: str, epochs: int) -> dict:
    import numpy as np
    import torch

    from bench.peers import _torch_model

    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = read_csv(csv_path)
    t_parse = time.perf_counter() - t0
    tensors = {
        s: (torch.from_numpy(i[:, None].astype(np.float32) / 255.0), torch.from_numpy(lab))
        for s, (i, lab) in data.items()
    }
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors["train"]),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
    )
    model = _torch_model(model_name).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def accuracy(split):
        model.eval()
        x, y = tensors[split]
        correct = 0
        with torch.no_grad():
            for s in range(0, len(x), 256):
                xb = x[s : s + 256].contiguous(memory_format=torch.channels_last)
                correct += int((model(xb).argmax(1) == y[s : s + 256]).sum())
        return correct / len(x)

    t1 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for xb, yb in loader:
            xb = _torch_augment(torch, xb).contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f} val acc {accuracy('val'):.4f}")
    t_train = time.perf_counter() - t1
    return {"parse_s": t_parse, "train_s": t_train, "test_accuracy": accuracy("test")}


# ----------------------------------------------------------------------------- driver


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def ferjax_run(csv_path: Path, model: str, epochs: int, workdir: Path, caches: Path) -> dict:
    """One `python -m ferjax.main` run with its compilation and parse caches under `caches`."""
    cmd = [
        sys.executable,
        "-m",
        "ferjax.main",
        f"--config={ROOT / 'configs' / CONFIGS[model]}",
        f"--workdir={workdir}",
        "--config.data.name=fer2013",
        f"--config.data.path={csv_path}",
        f"--config.train.num_epochs={epochs}",
        f"--config.train.batch_size={BATCH}",
        f"--config.augment.ops={FERJAX_AUGMENT}",
        "--config.sampling.method=none",
        f"--config.train.compilation_cache_dir={caches / 'jax'}",
        f"--config.data.cache_dir={caches / 'data'}",
    ]
    wall, out = _timed(cmd)
    report = json.loads((workdir / "report.json").read_text())
    account = json.loads((workdir / "time.json").read_text())
    epoch_s = [float(s) for s in re.findall(r"\| ([0-9.]+)s\s*$", out, re.M)]
    summary = next(line for line in out.splitlines() if line.startswith("time: "))
    return {
        "wall_s": wall,
        "train_s": sum(epoch_s) if epoch_s else None,
        "test_accuracy": report["accuracy"],
        "account": account,
        "outside_s": round(wall - account["total"], 2),
        "summary": summary,
        "command": " ".join(cmd),
    }


def peer_run(framework: str, csv_path: Path, model: str, epochs: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.end_to_end",
        "--peer-run",
        framework,
        "--csv",
        str(csv_path),
    ]
    cmd += ["--model", model, "--epochs", str(epochs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    wall, out = _timed(cmd, env)
    # The RESULT line, wherever the peer's libraries printed their warnings.
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)}: no RESULT line in its output:\n{out[-2000:]}")
    result = json.loads(lines[-1].split("RESULT ", 1)[1])
    return {"wall_s": wall, **result, "command": " ".join(cmd)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_cnn", choices=sorted(CONFIGS))
    parser.add_argument("--frameworks", default="ferjax,torch", help="also: keras")
    parser.add_argument("--train", type=int, default=28709, help="training rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs per framework, alternating")
    parser.add_argument("--caches", default="cold,warm", help="ferjax's caches: cold, warm or both")
    parser.add_argument("--csv", default="", help="use this fer2013.csv instead of generating")
    parser.add_argument("--peer-run", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    if args.peer_run:
        run = {"keras": run_keras, "torch": run_torch}[args.peer_run]
        print("RESULT " + json.dumps(run(args.csv, args.model, args.epochs)), flush=True)
        return {}

    with tempfile.TemporaryDirectory(prefix="ferjax-e2e-") as tmp:
        csv_path = Path(args.csv) if args.csv else Path(tmp) / "fer2013.csv"
        if not args.csv:
            t = time.perf_counter()
            write_csv(csv_path, args.train)
            print(
                f"wrote {csv_path} ({args.train} training rows) in {time.perf_counter() - t:.0f}s"
            )
        quiet = wait_until_quiet()
        cpu = machine.record()
        print(machine.line(cpu), flush=True)
        caches = args.caches.split(",")
        results = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": cpu,
            "machine_quiet": quiet,
            "model": args.model,
            "train_rows": args.train,
            "epochs": args.epochs,
            "batch": BATCH,
            "runs": {},
        }
        frameworks = []
        for fw in args.frameworks.split(","):
            frameworks += [f"ferjax-{c}" for c in caches] if fw == "ferjax" else [fw]
        if "warm" in caches and "ferjax" in args.frameworks:
            ferjax_run(csv_path, args.model, args.epochs, Path(tmp) / "prime", Path(tmp) / "warm")
        for repeat in range(args.repeats):
            order = frameworks if repeat % 2 == 0 else frameworks[::-1]
            for fw in order:
                quiet = wait_until_quiet()
                if fw.startswith("ferjax"):
                    cache = fw.split("-")[1]
                    workdir = Path(tmp) / f"{fw}{repeat}"
                    where = Path(tmp) / ("warm" if cache == "warm" else f"cold{repeat}")
                    run = ferjax_run(csv_path, args.model, args.epochs, workdir, where)
                else:
                    run = peer_run(fw, csv_path, args.model, args.epochs)
                run["quiet"] = quiet
                results["runs"].setdefault(fw, []).append(run)
                print(
                    f"{fw:12s} wall {run['wall_s']:7.1f}s  train loop "
                    f"{run['train_s'] or float('nan'):7.1f}s  test acc "
                    f"{run['test_accuracy']:.3f}  (other processes {quiet['other_cores']:.2f} "
                    f"cores, load {quiet['loadavg'][0]:.2f})",
                    flush=True,
                )
                if "summary" in run:
                    print(f"             {run['summary']} (+ outside {run['outside_s']:.1f})")
    runs = results["runs"]
    walls = {fw: [r["wall_s"] for r in rs] for fw, rs in runs.items()}
    results["wall_s"] = {
        fw: {"median": statistics.median(w), "min": min(w), "max": max(w)}
        for fw, w in walls.items()
    }
    for ours in [fw for fw in runs if fw.startswith("ferjax")]:
        base = statistics.median(walls[ours])
        for fw in [fw for fw in runs if not fw.startswith("ferjax")]:
            r = statistics.median(walls[fw]) / base
            spread = (min(walls[fw]) / max(walls[ours]), max(walls[fw]) / min(walls[ours]))
            results[f"{ours}_speedup_vs_{fw}"] = {"median": r, "range": list(spread)}
            print(
                f"{ours} end to end {r:.2f}x faster than {fw} (median of {len(walls[fw])}; "
                f"range {spread[0]:.2f}-{spread[1]:.2f}x)"
            )
        phases = [r["account"]["phases"] for r in runs[ours]]
        mean = {p: statistics.mean(ph.get(p, 0.0) for ph in phases) for p in phases[0]}
        outside = statistics.mean(r["outside_s"] for r in runs[ours])
        results[f"{ours}_mean_account"] = {**mean, "outside": outside}
        print(
            f"{ours} mean account: "
            + " + ".join(f"{p} {v:.1f}" for p, v in mean.items() if v >= 0.05)
            + f" + outside {outside:.1f}"
        )
    print(machine.line(cpu))
    results_io.save(results, args.out, "end_to_end")
    return results


if __name__ == "__main__":
    main()
