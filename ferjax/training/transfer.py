"""Transfer learning: start from pretrained weights (`model.init_from`), freeze parameter groups
(`model.freeze`) and unfreeze them later (`train.unfreeze_at_epoch`) without restarting the run.

Freezing is expressed in the optimizer, whose state structure never changes during a run (so
checkpoints written before and after unfreezing restore into the same target): parameters whose
'/'-joined path (e.g. `backbone/stage1_block1/conv1/kernel`) matches one of the comma-separated
regexes of `model.freeze` (re.search) get zero updates; after `train.unfreeze_at_epoch` epochs
they train at `optim.backbone_lr_scale` times the learning rate. BatchNorm statistics whose
path matches are kept fixed while frozen.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from ferjax.models import weights
from ferjax.runtime.errors import CheckpointError, ConfigError
from ferjax.runtime.workdir import BEST, LATEST, Workdir, find_run_info

FROZEN, TRAINABLE = "frozen", "trainable"


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


@functools.lru_cache(maxsize=16)
def parse_patterns(spec: str) -> tuple[re.Pattern, ...]:
    """The comma-separated regexes of `model.freeze` (parsed once per distinct spec)."""
    try:
        return tuple(re.compile(p.strip()) for p in str(spec).split(",") if p.strip())
    except re.error as e:
        raise ConfigError(f"config.model.freeze: got {spec!r}, not a valid regex ({e})") from None


def freeze_patterns(config: ml_collections.ConfigDict) -> tuple[re.Pattern, ...]:
    return parse_patterns(str(config.model.freeze))


def frozen_mask(tree, patterns: list[re.Pattern]):
    """bool per leaf of `tree`: does its path match one of `patterns`?"""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(p.search(path_str(path)) for p in patterns), tree
    )


def param_labels(params, patterns: list[re.Pattern]):
    """FROZEN / TRAINABLE per parameter; a pattern that matches nothing is a config mistake."""
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for p in patterns:
        if not any(p.search(s) for s in paths):
            top = sorted({s.split("/")[0] for s in paths})
            raise ConfigError(
                f"config.model.freeze: pattern {p.pattern!r} matches no parameter "
                f"(top-level names: {', '.join(top)})"
            )
    return jax.tree.map(lambda m: FROZEN if m else TRAINABLE, frozen_mask(params, patterns))


def unfreeze_step(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int | None:
    """The step at which frozen parameters start training, or None for never."""
    epoch = int(config.train.unfreeze_at_epoch)
    return epoch * steps_per_epoch if epoch > 0 else None


def freezing_optimizer(
    config: ml_collections.ConfigDict,
    make_tx: Callable[[Callable], optax.GradientTransformation],
    schedule: Callable,
    steps_per_epoch: int,
) -> optax.GradientTransformation:
    """multi_transform over FROZEN / TRAINABLE parameters. make_tx(learning_rate) builds the base
    optimizer. Frozen parameters: set_to_zero (never unfrozen), or a conditionally masked copy of
    the base optimizer whose state only starts moving at the unfreeze step, with learning rate
    backbone_lr_scale * schedule(global step)."""
    patterns = freeze_patterns(config)
    start = unfreeze_step(config, steps_per_epoch)
    if start is None:
        frozen = optax.set_to_zero()
    else:
        scale = float(config.optim.backbone_lr_scale)
        lr = lambda count: scale * schedule(count + start)  # noqa: E731 - inner count starts at 0
        frozen = optax.transforms.conditionally_mask(make_tx(lr), lambda step: step >= start)
    return optax.multi_transform(
        {TRAINABLE: make_tx(schedule), FROZEN: frozen},
        functools.partial(param_labels, patterns=patterns),
    )


def make_keep_frozen_stats(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """keep(old_stats, new_stats, step) -> stats with the frozen BatchNorm statistics of `old`
    while frozen; None when nothing is frozen."""
    patterns = freeze_patterns(config)
    if not patterns:
        return None
    start = unfreeze_step(config, steps_per_epoch)

    def keep(old, new, step):
        frozen = True if start is None else step < start
        mask = frozen_mask(old, patterns)
        return jax.tree.map(lambda m, o, n: jnp.where(frozen, o, n) if m else n, mask, old, new)

    return keep


# ------------------------------------------------------------------------------- init_from


def _orbax_state_dir(path: str) -> str:
    """The `<step>/state` item of a workdir, a checkpoints/{best,latest} folder or a step."""
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    run = Workdir(path)
    for folder in (run.checkpoint_dir(BEST), run.checkpoint_dir(LATEST), os.path.abspath(path)):
        steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
        if steps:
            return os.path.join(folder, str(max(steps)), "state")
    raise CheckpointError(f"{path}: no ferjax checkpoint (expected checkpoints/best or latest)")


@functools.lru_cache(maxsize=2)
def load_pretrained(path: str, model_name: str) -> dict:
    """{"params", "batch_stats", "meta"} (numpy leaves) from a converted .msgpack file, a raw
    weight file (converted on the fly) or a ferjax workdir / Orbax checkpoint."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: model.init_from does not exist")
    if os.path.isdir(path):
        state_dir = _orbax_state_dir(path)
        try:
            state = ocp.StandardCheckpointer().restore(os.path.abspath(state_dir))
        except Exception as e:  # noqa: BLE001 - any failure means an unusable checkpoint
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{state_dir}: cannot be restored ({first[:200]})") from None
        info = find_run_info(path)
        meta = {"style": info.style if info else None, "source_format": "ferjax"}
        return {
            "params": state["params"],
            "batch_stats": state.get("batch_stats", {}),
            "meta": meta,
        }
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF") or path.endswith((".safetensors", ".pth", ".pt", ".bin")):
        if model_name not in weights.WEIGHT_MODELS:
            raise CheckpointError(
                f"{path}: ImageNet weight files need model.name "
                f"{' | '.join(weights.WEIGHT_MODELS)}, not {model_name}"
            )
        return weights.convert(path, model_name)
    return weights.load(path)


def resolve_style(config: ml_collections.ConfigDict) -> str:
    """model.style of a resnet50, with auto resolved from model.init_from's source (torch when
    there is none). Resolved once when a run starts and saved in model_info.json."""
    style = config.model.style
    if style != "auto":
        return style
    path = config.model.init_from
    if not path:
        return "torch"
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(8).startswith(b"\x89HDF"):
                return "keras"
        if path.endswith((".safetensors", ".pth", ".pt", ".bin")):
            return "torch"
    return load_pretrained(path, config.model.name)["meta"].get("style") or "torch"


def _flat(tree) -> dict[str, np.ndarray]:
    return {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _adapt_channels(src: np.ndarray, shape: tuple) -> np.ndarray | None:
    """An RGB first-conv kernel for a one-channel input (sum_rgb) or the reverse."""
    if src.ndim != 4 or src.shape[:2] != shape[:2] or src.shape[3] != shape[3]:
        return None
    if src.shape[2] == 3 and shape[2] == 1:
        return src.sum(axis=2, keepdims=True)
    if src.shape[2] == 1 and shape[2] == 3:
        return np.repeat(src / 3.0, 3, axis=2)
    return None


def merge_pretrained(target: dict, source: dict, where: str) -> tuple[dict, list[str]]:
    """Copies every tensor of `source` into `target` ({"params", "batch_stats"}) by path.

    Top-level names starting with `head` may be missing or mis-shaped (they keep their fresh
    initialisation, listed in the returned notes); any other missing or mis-shaped tensor raises
    CheckpointError naming it.
    """
    src = _flat({"params": source["params"], "batch_stats": source.get("batch_stats", {})})
    fresh = []

    def take(path, leaf):
        key = path_str(path)
        value = src.get(key)
        shape = tuple(leaf.shape)
        if value is not None and tuple(np.shape(value)) != shape:
            adapted = _adapt_channels(np.asarray(value), shape)
            if adapted is None and not key.split("/")[1].startswith("head"):
                raise CheckpointError(
                    f"{where}: tensor {key!r} has shape {tuple(np.shape(value))}, expected {shape}"
                )
            value = adapted
        if value is None:
            if not key.split("/")[1].startswith("head"):
                raise CheckpointError(f"{where}: missing tensor {key!r}")
            fresh.append(key)
            return leaf
        return jax.device_put(np.asarray(value, leaf.dtype), leaf.sharding)

    merged = jax.tree_util.tree_map_with_path(take, target)
    return merged, fresh


def init_from(config: ml_collections.ConfigDict, state, workdir: str):
    """state with params and batch_stats from `model.init_from` (a fresh run only: a workdir
    that already has a latest checkpoint resumes from it instead)."""
    path = config.model.init_from
    if not path or Workdir(workdir).checkpoint_steps(LATEST):
        return state
    source = load_pretrained(path, config.model.name)
    if config.model.name == "resnet50":
        have, want = source["meta"].get("style"), resolve_style(config)
        if have and have != want:
            raise CheckpointError(
                f"{path}: {have}-style ResNet-50 weights, but model.style resolves to {want}; "
                f"set --config.model.style={have} (or auto)"
            )
    target = {"params": state.params, "batch_stats": state.batch_stats}
    merged, fresh = merge_pretrained(target, source, path)
    total = len(jax.tree.leaves(target))
    note = f"; freshly initialised: {', '.join(fresh)}" if fresh else ""
    print(f"init_from {path}: {total - len(fresh)} of {total} tensors restored{note}", flush=True)
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"])
