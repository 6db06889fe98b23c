"""What machine a benchmark ran on: the CPU model and the vector-unit flags that change which
kernels win, and the measured matmul peak. Recorded next to every ratio (the same harness read
1.32x on one 2-core EPYC and 0.99x on another whose cores have a full-width AVX-512 unit).

    python -m bench.machine          # prints the record as JSON (the peak takes ~10 s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ferjax.runtime.cpu import cpuinfo_fields, parse_cpuinfo, vector_class

# The flags that decide kernels on x86 (AVX-512 subsets, VNNI/BF16, AMX; vp2intersect marks
# the Zen 5 / Tiger Lake cores, among which full-width AVX-512 units).
INTERESTING = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_vp2intersect",
    "amx_tile",
    "amx_bf16",
)


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """{"model": ..., "family": ..., "model_number": ..., "cores": n, "flags": [...] (the
    INTERESTING flags present), "vector_units": ...}, from /proc/cpuinfo; what is unknown is
    left out."""
    out: dict = {"cores": os.cpu_count()}
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return out
    fields = cpuinfo_fields(text)
    out["model"] = fields.get("model name", "")
    out["family"] = fields.get("cpu family", "")
    out["model_number"] = fields.get("model", "")
    flags = set(fields.get("flags", "").split())
    out["flags"] = [f for f in INTERESTING if f in flags]
    # The class ferjax's kernel choices read (ferjax.runtime.cpu: WinogradConv's layers).
    out["vector_units"] = vector_class(parse_cpuinfo(text))
    return out


def matmul_peak() -> dict:
    """The harness's practical peak (bench.train_step.practical_peak: best GFLOP/s of a 3072^2
    float32 matmul through XLA and numpy), measured in a fresh process."""
    code = (
        "import json; from bench.train_step import practical_peak; "
        "print(json.dumps(practical_peak()))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def record(peak: bool = True) -> dict:
    """cpu_info() plus, with `peak`, the matmul peak in GFLOP/s."""
    out = cpu_info()
    if peak:
        out["matmul_peak_gflops"] = matmul_peak()
    return out


def line(rec: dict) -> str:
    """One line for a benchmark's output: CPU, flags, peak."""
    peak = rec.get("matmul_peak_gflops", {}).get("peak")
    shown = f", matmul peak {peak:.0f} GFLOP/s" if peak else ""
    return (
        f"cpu: {rec.get('model', '?')} (family {rec.get('family', '?')} model "
        f"{rec.get('model_number', '?')}, {rec.get('cores')} cores; "
        f"{' '.join(rec.get('flags', [])) or 'no AVX flags'}){shown}"
    )


if __name__ == "__main__":
    rec = record()
    print(line(rec))
    print(json.dumps(rec, indent=1))
