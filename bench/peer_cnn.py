"""A learning claim and its peer: ferjax's CNN recipe and a PyTorch build of the same network and
recipe, trained on the same generated faces, at several input sizes and seeds.

    python -m bench.peer_cnn [--config configs/quick.py] [--sizes 48,112] [--channels 3]
        [--classes happy,sad,neutral] [--num_train 1500] [--epochs 8] [--seeds 0,1]
        [--config.KEY=VALUE ...]

Both sides see the faces that `ferjax.data.load.load_data` returns for the config (procedural
faces, cleaned, the class subset kept): ferjax trains them with `python -m ferjax.main` in a
fresh process; PyTorch trains the same architecture (conv-BN-ReLU stages, 2x2 max-pool and
dropout after each, the head average-pooled to the 48 px feature-map side above 48 px, dense,
dropout, dense) with PyTorch's own initialisers and the same recipe (AdamW with weight decay on
kernels only, linear warm-up then cosine, batch size, epochs, per-image standardisation, random
flip and edge-padded shifts). Prints test accuracy and balanced accuracy per size and seed and
writes bench/results/peer_cnn-<UTC time>.json. Not a speed benchmark: the load is recorded, but
the numbers are accuracies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_io  # noqa: E402


def now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def overrides_for(args, size: int) -> list[str]:
    return [
        "--config.data.name=synthetic",
        f"--config.data.image_size={size}",
        f"--config.data.channels={args.channels}",
        f"--config.data.classes={args.classes}",
        f"--config.data.synthetic.num_train={args.num_train}",
        f"--config.data.synthetic.num_val={args.num_train // 5}",
        f"--config.data.synthetic.num_test={args.num_train // 2}",
        f"--config.train.num_epochs={args.epochs}",
        *args.extra,
    ]


def load_config(args, size: int):
    from ferjax.cli.flags import split_overrides
    from ferjax.config.overrides import load_config as load

    overrides, _ = split_overrides(overrides_for(args, size))
    return load(args.config, overrides)


def ferjax_run(args, size: int, seed: int, workdir: str) -> dict:
    cmd = [sys.executable, "-m", "ferjax.main", f"--config={args.config}", f"--workdir={workdir}"]
    cmd += [*overrides_for(args, size), f"--config.train.seed={seed}"]
    cmd += ["--config.train.verbosity=0"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ferjax run failed:\n{out.stderr[-3000:]}")
    report = json.loads((Path(workdir) / "report.json").read_text())
    rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    first = next(r["loss"] for r in rows if r["split"] == "train")
    return {
        "accuracy": report["accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "first_logged_loss": first,
        "wall_s": time.perf_counter() - start,
    }


def torch_model(config, in_channels: int, num_classes: int, side_in: int):
    import torch.nn as tnn

    m = config.model
    widths = [int(w) for w in str(m.cnn_widths).split(",")]
    layers, cin = [], in_channels
    for width in widths:
        for _ in range(m.cnn_convs_per_stage):
            layers += [
                tnn.Conv2d(cin, width, 3, padding=1, bias=False),
                tnn.BatchNorm2d(width, eps=1e-5, momentum=0.1),
                tnn.ReLU(inplace=True),
            ]
            cin = width
        layers += [tnn.MaxPool2d(2), tnn.Dropout(m.conv_dropout)]
    side = max(1, 48 >> len(widths))
    if side_in >> len(widths) > side:
        layers.append(tnn.AdaptiveAvgPool2d(side))
    layers += [
        tnn.Flatten(),
        tnn.Linear(cin * side * side, m.cnn_hidden),
        tnn.ReLU(inplace=True),
        tnn.Dropout(m.dropout),
        tnn.Linear(m.cnn_hidden, num_classes),
    ]
    return tnn.Sequential(*layers)


def torch_run(config, data, seed: int) -> dict:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(seed)
    train, test = data.splits["train"], data.splits["test"]
    h, w, c = train.images.shape[1:]
    k = data.num_classes

    def standardise(x):  # per-image standardisation (data.normalize=per_image)
        x = x.astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1.0 / math.sqrt(h * w * c))
        return (x - mean) / std

    def augment(x):  # random flip and edge-padded shift by up to `pad` pixels
        pad = 4
        out = np.empty_like(x)
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        for n in range(len(x)):
            img = x[n] if rng.random() >= 0.5 else x[n, :, ::-1]
            if img is not x[n]:
                padded[n, pad:-pad, pad:-pad] = img
            dy, dx = rng.integers(0, 2 * pad + 1, 2)
            out[n] = padded[n, dy : dy + h, dx : dx + w]
        return out

    model = torch_model(config, c, k, h)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    o = config.optim
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=o.learning_rate,
        betas=(o.b1, o.b2),
    )
    batch = config.train.batch_size
    steps_per_epoch = len(train.labels) // batch
    total, warm = steps_per_epoch * config.train.num_epochs, int(o.warmup_epochs * steps_per_epoch)

    def lr_at(step):
        if step < warm:
            return o.learning_rate * step / max(warm, 1)
        return 0.5 * o.learning_rate * (1 + math.cos(math.pi * (step - warm) / (total - warm)))

    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    step, first = 0, None
    for _ in range(config.train.num_epochs):
        model.train()
        order = rng.permutation(len(train.labels))
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * batch : (s + 1) * batch]
            x = standardise(augment(train.images[idx]))
            xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            yb = torch.from_numpy(train.labels[idx].astype(np.int64))
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        first = first if first is not None else float(np.mean(losses))
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(standardise(test.images).transpose(0, 3, 1, 2).copy())
        pred = torch.cat([model(x[s : s + 256]).argmax(1) for s in range(0, len(x), 256)])
    pred, y = pred.numpy(), test.labels
    recall = [float((pred[y == c] == c).mean()) for c in range(k) if (y == c).any()]
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.mean(recall)),
        "first_epoch_mean_loss": first,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/quick.py")
    p.add_argument("--sizes", default="48,112")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", default="happy,sad,neutral")
    p.add_argument("--num_train", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args, extra = p.parse_known_args(argv)
    args.extra = extra
    from ferjax.data.load import load_data

    rows = []
    tmp = tempfile.mkdtemp(prefix="peer_cnn_")
    for size in (int(s) for s in args.sizes.split(",")):
        config = load_config(args, size)
        data = load_data(config)
        for seed in (int(s) for s in args.seeds.split(",")):
            with open("/proc/loadavg") as f:
                load = float(f.read().split()[0])
            fj = ferjax_run(args, size, seed, os.path.join(tmp, f"s{size}_{seed}"))
            config.unlock()
            config.train.seed = seed
            pt = torch_run(config, data, seed)
            rows.append({"size": size, "seed": seed, "ferjax": fj, "torch": pt, "load": load})
            print(
                f"{size} px seed {seed}: ferjax acc {fj['accuracy']:.3f} balanced "
                f"{fj['balanced_accuracy']:.3f} | PyTorch acc {pt['accuracy']:.3f} balanced "
                f"{pt['balanced_accuracy']:.3f} (load {load:.2f})",
                flush=True,
            )
    result = {"time": now(), "args": vars(args), "runs": rows}
    results_io.save(result, args.out, "peer_cnn")
    return result


if __name__ == "__main__":
    main()
