"""What this machine's CPU does per core, measured once and remembered: the float32 matmul
throughput through XLA, by which `model.conv_impl=auto` chooses between Winograd and direct
convolutions (ferjax.models.layers.resolve_conv_impl).

Winograd F(4x4, 3x3) trades 4x fewer multiplies in its batched GEMMs for transforms that are
bound by memory. Where a core's GEMMs are slow (a half-width AVX-512 unit: ~90 GFLOP/s per core
on the 2-core AMD EPYC Zen 4 VMs measured) the trade wins by ~1.4x over XLA's direct
convolutions; where they are fast (a full-width unit with ~155-165 GFLOP/s per core: the Intel
Sapphire Rapids-class VMs) it gains a few percent on the plain CNN and nothing on ResNet-18,
while compiling 7-8 s longer (bench/README.md). So auto takes Winograd for wide models only on
cores below WINOGRAD_BELOW_GFLOPS_PER_CORE.

The measurement (~0.3 s, once) is stored under the cache directory (FERJAX_CACHE or
~/.cache/ferjax), keyed by the CPU's model, vector flags, core count and jaxlib version, so
that every later run on the machine makes the same choice (and computes the same numbers)
without measuring again.
"""

from __future__ import annotations

import json
import os
import time

PROBE_FILE = "cpu_probe.json"
# Per-core float32 matmul GFLOP/s below which Winograd convolutions win (see above).
WINOGRAD_BELOW_GFLOPS_PER_CORE = 120.0
_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")
_measured: dict[str, float] = {}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def signature(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, family/model, the vector flags that decide kernels, the cores this
    process may use and the jaxlib version, as one string (the probe's cache key)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            first = f.read().split("\n\n", 1)[0]
        for line in first.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    try:
        from jaxlib import version

        jaxlib = version.__version__
    except Exception:  # noqa: BLE001 - no jaxlib version: still a usable key
        jaxlib = "?"
    return " | ".join(
        [
            fields.get("model name", "unknown cpu"),
            f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}",
            ",".join(f for f in _FLAGS if f in flags) or "-",
            f"{cores()} cores",
            f"jaxlib {jaxlib}",
        ]
    )


def measure_matmul_gflops(size: int = 1536, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of a [size, size] matmul through XLA on the default CPU device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    x = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
    mm = jax.jit(lambda a: a @ a)
    mm(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def cache_dir() -> str:
    return os.environ.get("FERJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ferjax"))


def matmul_gflops_per_core(directory: str | None = None) -> float:
    """This CPU's float32 matmul GFLOP/s per core (to 0.1): from the probe file when this CPU
    (same signature) was measured before, else measured now and written there."""
    key = signature()
    if key in _measured:
        return _measured[key]
    path = os.path.join(directory or cache_dir(), PROBE_FILE)
    known: dict = {}
    try:
        with open(path) as f:
            loaded = json.load(f)
        known = loaded if isinstance(loaded, dict) else {}
        value = float(known[key]["matmul_gflops_per_core"])
    except (OSError, ValueError, KeyError, TypeError):
        value = round(measure_matmul_gflops() / cores(), 1)
        known[key] = {"matmul_gflops_per_core": value, "measured": time.time()}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(known, f, indent=1)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache directory: measured again next time
    _measured[key] = value
    return value


def measured() -> bool:
    """Whether this process has consulted the probe (auto asked it)."""
    return bool(_measured)


def winograd_pays() -> bool:
    """Whether Winograd convolutions beat direct ones on this CPU (see the module docstring)."""
    return matmul_gflops_per_core() < WINOGRAD_BELOW_GFLOPS_PER_CORE
