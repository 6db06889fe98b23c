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


def test_narrow_layers_off_winograd_compute_the_convolution(monkeypatch):
    """On a full-width CPU a 3x3 stride-1 layer below WINOGRAD_MIN_IN takes im2col.strided_conv
    at stride 1 (XLA's forward and dW, a GEMM input gradient): nn.Conv's values and gradients."""
    import flax.linen as nn
    import numpy as np

    full = cpu.parse_cpuinfo(INTEL)
    monkeypatch.setattr(cpu, "host_cpu", lambda path=cpu.CPUINFO: full)
    strides = []
    real = winograd_conv.strided_conv

    def spy(x, kernel, s, padding):
        strides.append(s)
        return real(x, kernel, s, padding)

    monkeypatch.setattr(winograd_conv, "strided_conv", spy)
    kw = dict(features=24, kernel_size=(3, 3), padding="SAME", use_bias=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 12, 12, 16))
    ct = jax.random.normal(jax.random.PRNGKey(2), (4, 12, 12, 24))
    params = nn.Conv(**kw).init(jax.random.PRNGKey(1), x)

    def value_and_grads(mod):
        f = lambda p, x_: jnp.sum(mod.apply(p, x_) * ct)
        return jax.jit(lambda p: (mod.apply(p, x), jax.grad(f, argnums=(0, 1))(p, x)))(params)

    y, (gp, gx) = value_and_grads(WinogradConv(**kw))
    assert strides and set(strides) == {(1, 1)}  # the premise: the non-Winograd path, stride 1
    y_ref, (gp_ref, gx_ref) = value_and_grads(nn.Conv(**kw))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        gp["params"]["kernel"], gp_ref["params"]["kernel"], rtol=1e-5, atol=1e-4
    )
