"""Peer implementations of ferjax's models for bench.train_step: the same layers, widths,
BatchNorm, dropout, SGD (momentum 0.9, Nesterov, weight decay 5e-4) and cross-entropy.

torch: PyTorch, channels-last (`pip install ferjax[bench]`). keras: Keras 3 on TensorFlow,
`train_on_batch` of a compiled model. Each peer exposes `batch` and `step()` (one blocking train
step on a fixed random 48x48x1 batch, returning seconds).
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 7
IMAGE = 48


# Benchmark model name -> the config whose CNN it is: the demo's (16/32/64 since 2026-12-02),
# the narrow CNN the demo had before (32/64/128, configs/quick.py) and the default VGG-style CNN.
CNN_CONFIGS = {"demo_cnn": "demo.py", "narrow_cnn": "quick.py"}


def _cnn_spec(name: str) -> dict:
    config_file = CNN_CONFIGS.get(name, "default.py")
    config = runpy.run_path(str(ROOT / "configs" / config_file))["get_config"]()
    m = config.model
    return {
        "widths": [int(w) for w in str(m.cnn_widths).split(",")],
        "convs": m.cnn_convs_per_stage,
        "hidden": m.cnn_hidden,
        "dropout": m.dropout,
        "conv_dropout": m.conv_dropout,
    }


# ----------------------------------------------------------------------------- PyTorch


def _torch_model(name: str):
    import torch.nn as tnn

    def conv_bn(cin, cout, k=3, s=1):
        return [
            tnn.Conv2d(cin, cout, k, s, padding=k // 2, bias=False),
            tnn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
        ]

    if name != "resnet18":
        spec = _cnn_spec(name)
        layers, cin = [], 1
        for width in spec["widths"]:
            for _ in range(spec["convs"]):
                layers += [*conv_bn(cin, width), tnn.ReLU(inplace=True)]
                cin = width
            layers += [tnn.MaxPool2d(2), tnn.Dropout(spec["conv_dropout"])]
        side = IMAGE // 2 ** len(spec["widths"])
        layers += [
            tnn.Flatten(),
            tnn.Linear(cin * side * side, spec["hidden"]),
            tnn.ReLU(inplace=True),
            tnn.Dropout(spec["dropout"]),
            tnn.Linear(spec["hidden"], NUM_CLASSES),
        ]
        return tnn.Sequential(*layers)

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(
                *conv_bn(cin, cout, 3, stride), tnn.ReLU(inplace=True), *conv_bn(cout, cout)
            )
            self.proj = (
                tnn.Sequential(*conv_bn(cin, cout, 1, stride))
                if stride != 1 or cin != cout
                else tnn.Identity()
            )
            self.relu = tnn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.proj(x))

    layers, cin = [*conv_bn(1, 64), tnn.ReLU(inplace=True)], 64
    for s, width in enumerate((64, 128, 256, 512)):
        for b in range(2):
            layers.append(Block(cin, width, 2 if s > 0 and b == 0 else 1))
            cin = width
    layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Dropout(0.5), tnn.Linear(cin, 7)]
    return tnn.Sequential(*layers)


class TorchStep:
    def __init__(self, name: str, batch: int):
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.batch = batch
        self.model = _torch_model(name).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        self.loss = torch.nn.CrossEntropyLoss()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 1, IMAGE, IMAGE)).astype(np.float32)
        self.x = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(rng.integers(0, NUM_CLASSES, batch))

    def step(self) -> float:
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        loss.item()
        return time.perf_counter() - t


# ----------------------------------------------------------------------------- Keras


def _keras_model(name: str):
    import keras
    from keras import layers

    def conv_bn(x, cout, k=3, s=1):
        x = layers.Conv2D(cout, k, s, padding="same", use_bias=False)(x)
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

    inputs = keras.Input((IMAGE, IMAGE, 1))
    x = inputs
    if name != "resnet18":
        spec = _cnn_spec(name)
        for width in spec["widths"]:
            for _ in range(spec["convs"]):
                x = layers.ReLU()(conv_bn(x, width))
            x = layers.Dropout(spec["conv_dropout"])(layers.MaxPooling2D(2)(x))
        x = layers.Flatten()(x)
        x = layers.Dropout(spec["dropout"])(layers.Dense(spec["hidden"], activation="relu")(x))
    else:
        x = layers.ReLU()(conv_bn(x, 64))
        cin = 64
        for s, width in enumerate((64, 128, 256, 512)):
            for b in range(2):
                stride = 2 if s > 0 and b == 0 else 1
                y = conv_bn(layers.ReLU()(conv_bn(x, width, 3, stride)), width)
                r = conv_bn(x, width, 1, stride) if stride != 1 or cin != width else x
                x = layers.ReLU()(layers.Add()([y, r]))
                cin = width
        x = layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x))
    outputs = layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs)


class KerasStep:
    def __init__(self, name: str, batch: int):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        keras.utils.set_random_seed(0)
        self.batch = batch
        self.model = _keras_model(name)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True, weight_decay=5e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch, IMAGE, IMAGE, 1)).astype(np.float32)
        self.y = rng.integers(0, NUM_CLASSES, batch)

    def step(self) -> float:
        t = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)
        return time.perf_counter() - t


def make(peer: str, name: str, batch: int):
    if peer == "torch":
        return TorchStep(name, batch)
    if peer == "keras":
        return KerasStep(name, batch)
    raise ValueError(f"unknown peer {peer!r}, expected torch or keras")
