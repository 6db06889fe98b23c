"""The op registry and the chain: `augment.ops` parsed once (parse_ops) and composed into one
jittable function (make_augment)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from collections.abc import Callable

import jax

from ferjax.runtime.errors import ConfigError
from ferjax.runtime.registry import Registry, did_you_mean


@dataclasses.dataclass(frozen=True)
class Op:
    """An augmentation op: fn(image f32[H, W, C], key, **params) (per example) or
    fn(images f32[B, H, W, C], targets f32[B, K], key, **params) -> (images, targets) (batch)."""

    fn: Callable
    batch: bool = False
    check: Callable | None = None  # check(**params) raises ConfigError on bad values

    def arguments(self) -> dict[str, object]:
        """The op's arguments and their defaults."""
        skip = ("image", "images", "targets", "key")
        return {
            n: p.default
            for n, p in inspect.signature(self.fn).parameters.items()
            if n not in skip and p.default is not inspect.Parameter.empty
        }


OPS = Registry("augment.ops")


def register(name: str, batch: bool = False, check: Callable | None = None):
    """Registers an augmentation op under `name` (a name can be registered once); `check`, if
    given, validates the parsed arguments (raising ConfigError)."""

    def wrap(fn):
        OPS.register(name, Op(fn, batch, check))
        return fn

    return wrap


# ----------------------------------------------------------------------- composition

_OP_RE = re.compile(r"^([a-z_0-9]+)(?:\((.*)\))?$")


def _typed(value: str, default, where: str):
    """`value` (text) in the type of the op argument's `default` (bool, int or float)."""
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ConfigError(f"augment.ops: {where} must be true or false, got {text!r}")
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parsed = None
    if isinstance(default, int) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if (
        isinstance(default, float)
        and isinstance(parsed, int | float)
        and not isinstance(parsed, bool)
    ):
        return float(parsed)
    kind = "an integer" if isinstance(default, int) else "a number"
    raise ConfigError(f"augment.ops: {where} must be {kind}, got {text!r}")


def parse_ops(spec: str) -> list[tuple[str, dict]]:
    """'flip|shift(pad=4)' -> [('flip', {}), ('shift', {'pad': 4})] with typed arguments."""
    chain = []
    for part in [p.strip() for p in str(spec).split("|") if p.strip()]:
        m = _OP_RE.match(part)
        if not m or m.group(1) not in OPS:
            name = m.group(1) if m else part
            raise ConfigError(
                f"augment.ops: unknown op {part!r}; known ops: {', '.join(sorted(OPS))}"
                + did_you_mean(name, OPS)
            )
        name, allowed = m.group(1), OPS.get(m.group(1)).arguments()
        params = {}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            key, eq, value = arg.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ConfigError(f"augment.ops: bad argument {arg!r} in {part!r}, expected k=v")
            if key not in allowed:
                raise ConfigError(
                    f"augment.ops: {name} has no argument {key!r} "
                    f"(it takes {', '.join(allowed) or 'none'})" + did_you_mean(key, allowed)
                )
            params[key] = _typed(value, allowed[key], f"{name}({key}=...)")
        if OPS.get(name).check is not None:
            OPS.get(name).check(**params)
        chain.append((name, params))
    return chain


def make_augment(spec) -> Callable:
    """Returns augment(images f32[B, H, W, C], targets f32[B, K], key) -> (images, targets).

    spec: the `augment.ops` text, or the chain parse_ops made of it (parsed once per run)."""
    parsed = parse_ops(spec) if isinstance(spec, str) else spec
    chain = [(OPS.get(n), dict(p)) for n, p in parsed]
    per_example = [(op, p) for op, p in chain if not op.batch]
    batch_level = [(op, p) for op, p in chain if op.batch]

    def one(image, key):
        keys = jax.random.split(key, max(len(per_example), 1))
        for (op, params), k in zip(per_example, keys):
            image = op.fn(image, k, **params)
        return image

    def augment(images, targets, key):
        k_ex, k_batch = jax.random.split(key)
        if per_example:
            images = jax.vmap(one)(images, jax.random.split(k_ex, images.shape[0]))
        for (op, params), k in zip(batch_level, jax.random.split(k_batch, len(batch_level))):
            images, targets = op.fn(images, targets, k, **params)
        return images, targets

    return augment
