"""Input path and augmentation throughput, with the seed's Keras ImageDataGenerator as baseline.

python bench/augment.py [--steps=N] [--models=cnn,resnet18]

Measures in one run, on FER2013-shaped data (28,709 x 48 x 48 uint8):
  (a) the host input path alone (tf.data index batches, as the trainer consumes them);
  (b) on-device augmentation alone (flip + shift + rotate + erase, jitted, batch 128);
  (c) the full train step of the cnn (batch 128) and resnet18 (batch 64) configs;
  (d) Keras ImageDataGenerator(rotation_range=10, width/height_shift_range=0.1,
      horizontal_flip=True).flow(...) images/s on the same data;
and prints the ratios the targets are stated in. Results go to bench/results/augment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

N = 28709
AUG = "flip|shift(pad=4)|rotate(degrees=10)|erase(p=0.5)"


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def host_input_path(images, labels, batch: int) -> float:
    from ferjax.data.pipeline import index_batches
    from ferjax.data.sampling import Sampler

    sampler = Sampler(labels, 7, "none", 0, "auto")
    records = sampler.epoch_records(0)
    t = time.perf_counter()
    count = 0
    for b in index_batches(records, batch):
        count += len(b["i"])
    return count / (time.perf_counter() - t)


def device_augment(batch: int, repeats: int) -> tuple[float, float]:
    from ferjax.data.augment import make_augment

    aug = jax.jit(make_augment(AUG))
    x = jax.numpy.asarray(np.random.default_rng(0).uniform(0, 255, (batch, 48, 48, 1)), "float32")
    t = jax.numpy.zeros((batch, 7))
    keys = iter(range(10**6))
    sec = timed(lambda: jax.block_until_ready(aug(x, t, jax.random.PRNGKey(next(keys)))), repeats)
    return batch / sec, sec


def train_step_time(model_name: str, batch: int, repeats: int, augment: str) -> float:
    """Median time of the trainer's own step (ferjax.training.program) with `augment` ops."""
    import runpy

    from bench.program import ferjax_program

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = runpy.run_path(os.path.join(root, "configs", "default.py"))["get_config"]()
    config.model.name = model_name
    config.augment.ops = augment
    config.train.batch_size = batch
    program, data, batches = ferjax_program(config, examples=4096, num_batches=1)
    box = [program.state]

    def run():
        box[0], m = program.train_step(box[0], data, batches[0])
        jax.block_until_ready(m)

    return timed(run, repeats)


def keras_image_data_generator(images, labels, batch: int, batches: int) -> float:
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError:  # older Keras / tf.keras
        from tensorflow.keras.preprocessing.image import ImageDataGenerator
    gen = ImageDataGenerator(
        rotation_range=10, width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True
    )
    flow = gen.flow(images[..., None].astype(np.float32), labels, batch_size=batch, seed=0)
    next(flow)
    t = time.perf_counter()
    for _ in range(batches):
        next(flow)
    return batches * batch / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed train steps per model")
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--keras_batches", type=int, default=40)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, N).astype(np.int32)
    out = {"device": str(jax.devices()[0]), "augment": AUG}
    out["host_input_images_per_s"] = host_input_path(images, labels, 128)
    out["device_augment_images_per_s"], aug_sec128 = device_augment(128, 20)
    _, aug_sec64 = device_augment(64, 20)
    out["keras_idg_images_per_s"] = keras_image_data_generator(
        images, labels, 128, args.keras_batches
    )
    batches = {"cnn": 128, "resnet18": 64}
    for name in args.models.split(","):
        b = batches[name]
        full = train_step_time(name, b, args.steps, AUG)
        bare = train_step_time(name, b, args.steps, "")
        out[f"{name}_train_step_images_per_s"] = b / full
        out[f"{name}_augment_share_of_step"] = (aug_sec128 if b == 128 else aug_sec64) / full
        out[f"{name}_step_with_vs_without_augment"] = full / bare
        out[f"{name}_host_input_over_step"] = out["host_input_images_per_s"] / (b / full)
    out["augment_over_keras_idg"] = (
        out["device_augment_images_per_s"] / out["keras_idg_images_per_s"]
    )
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "augment.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
