"""What ferjax knows about the host CPU, read from /proc/cpuinfo (no timing: a kernel choice
made by a measurement would make a run's numerics depend on how busy the machine was).

`vector_class()` sorts x86-64 CPUs by the width of their floating-point vector units, which is
what decides whether Winograd's convolutions pay on narrow layers (bench/README.md): with full
512-bit FMA units a direct convolution runs near the matmul peak and Winograd's transforms,
which are memory-bound, cost more than its fewer multiplies save on 64-channel layers; with
half-width units (AMD Zen 4 executes AVX-512 as two 256-bit halves) or 256-bit AVX2 the
multiplies dominate and Winograd wins there too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

CPUINFO = "/proc/cpuinfo"
FULL_WIDTH = "avx512-full"
HALF_WIDTH = "avx512-half"
NARROW = "avx2-or-less"
# AMD families whose AVX-512 runs on full-width units: Zen 5 (0x1A) and later. Zen 4 (0x19)
# splits each 512-bit operation into two 256-bit ones.
AMD_FULL_WIDTH_FAMILY = 0x1A


class Cpu(NamedTuple):
    vendor: str  # "GenuineIntel", "AuthenticAMD", "" when unknown
    family: int  # -1 when unknown
    flags: frozenset[str]


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's fields ("vendor_id", "cpu family", "model name", "flags", ...)
    from /proc/cpuinfo's text."""
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def parse_cpuinfo(text: str) -> Cpu:
    """The first processor's vendor, family and flags from /proc/cpuinfo's text."""
    fields = cpuinfo_fields(text)
    try:
        family = int(fields.get("cpu family", ""))
    except ValueError:
        family = -1
    return Cpu(fields.get("vendor_id", ""), family, frozenset(fields.get("flags", "").split()))


@functools.cache
def host_cpu(path: str = CPUINFO) -> Cpu:
    try:
        with open(path) as f:
            return parse_cpuinfo(f.read())
    except OSError:  # not Linux: nothing known
        return Cpu("", -1, frozenset())


def vector_class(cpu: Cpu | None = None) -> str:
    """FULL_WIDTH (Intel with AVX-512, AMD Zen 5 and later), HALF_WIDTH (AMD Zen 4's AVX-512)
    or NARROW (no AVX-512, or nothing known)."""
    cpu = host_cpu() if cpu is None else cpu
    if "avx512f" not in cpu.flags:
        return NARROW
    if cpu.vendor == "AuthenticAMD" and cpu.family < AMD_FULL_WIDTH_FAMILY:
        return HALF_WIDTH
    return FULL_WIDTH
