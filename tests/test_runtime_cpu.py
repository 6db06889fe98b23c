"""ferjax.runtime.cpu: the vector-unit class read from /proc/cpuinfo, and WinogradConv's
per-layer rule that depends on it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from ferjax.models import winograd_conv
from ferjax.models.winograd_conv import WinogradConv
from ferjax.runtime import cpu

REAL_HOST_CPU = cpu.host_cpu  # before the suite's fixture pins it (tests/conftest.py)

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
flags\t\t: fpu sse2
"""


def _amd(family: int, avx512: bool = True) -> str:
    flags = "fpu sse2 avx avx2 fma" + (" avx512f avx512bw" if avx512 else "")
    return f"vendor_id\t: AuthenticAMD\ncpu family\t: {family}\nflags\t\t: {flags}\n"


@pytest.mark.parametrize(
    "text,expected",
    [
        (INTEL, cpu.FULL_WIDTH),
        (_amd(0x19), cpu.HALF_WIDTH),  # Zen 4: AVX-512 as two 256-bit halves
        (_amd(0x1A), cpu.FULL_WIDTH),  # Zen 5
        (_amd(0x19, avx512=False), cpu.NARROW),  # Zen 3
        (INTEL.replace(" avx512f", ""), cpu.NARROW),
        ("", cpu.NARROW),
        ("vendor_id : GenuineIntel\ncpu family : ?\n", cpu.NARROW),
    ],
)
def test_vector_class_from_cpuinfo(text, expected):
    assert cpu.vector_class(cpu.parse_cpuinfo(text)) == expected


def test_only_the_first_processor_is_read(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(INTEL)
    parsed = REAL_HOST_CPU.__wrapped__(str(path))
    assert parsed.vendor == "GenuineIntel" and parsed.family == 6
    assert "avx512f" in parsed.flags and "amx_tile" in parsed.flags
    assert REAL_HOST_CPU.__wrapped__(str(tmp_path / "missing")) == cpu.Cpu("", -1, frozenset())


def _winograd_layers(monkeypatch, cin: int, **kwargs) -> int:
    """How many of a 3x3 stride-1 layer's convolutions WinogradConv sends through Winograd
    (traced only)."""
    calls = []
    real = winograd_conv.winograd_conv3x3

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return real(*args, **kw)

    monkeypatch.setattr(winograd_conv, "winograd_conv3x3", spy)
    x = jnp.zeros((2, 8, 8, cin))
    mod = WinogradConv(features=cin, kernel_size=(3, 3), padding="SAME", **kwargs)
    params = jax.eval_shape(mod.init, jax.random.PRNGKey(0), x)
    calls.clear()
    jax.eval_shape(mod.apply, params, x)
    return len(calls)


def test_winograd_layers_by_the_cpus_vector_units(monkeypatch):
    full = cpu.parse_cpuinfo(INTEL)
    monkeypatch.setattr(cpu, "host_cpu", lambda path=cpu.CPUINFO: full)
    assert winograd_conv.winograd_min_in() == 128
    assert _winograd_layers(monkeypatch, 64) == 0
    assert _winograd_layers(monkeypatch, 128) == 1
    assert _winograd_layers(monkeypatch, 64, min_winograd_in=8) == 1  # an explicit choice wins
    half = cpu.parse_cpuinfo(_amd(0x19))
    monkeypatch.setattr(cpu, "host_cpu", lambda path=cpu.CPUINFO: half)
    assert winograd_conv.winograd_min_in() == 8
    assert _winograd_layers(monkeypatch, 64) == 1
    assert _winograd_layers(monkeypatch, 4) == 0  # min_in_features: XLA's convolution


def test_the_run_says_which_layers_winograd_takes(monkeypatch):
    from types import SimpleNamespace

    from ferjax.models.layers import auto_choice

    full = cpu.parse_cpuinfo(INTEL)
    monkeypatch.setattr(cpu, "host_cpu", lambda path=cpu.CPUINFO: full)
    wide, narrow = SimpleNamespace(conv_impl="winograd"), SimpleNamespace(conv_impl="fast")
    assert auto_choice("auto", wide) == (
        "layers: conv_impl=auto chose winograd (Winograd on 3x3 layers of >= 128 input "
        "channels: avx512-full CPU)"
    )
    assert auto_choice("auto", narrow) == "layers: conv_impl=auto chose fast"
    assert auto_choice("winograd", wide) is None  # the user's own choice: nothing to say
    assert auto_choice("auto", SimpleNamespace()) is None  # a model without conv layers
