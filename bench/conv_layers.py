"""Layer-by-layer account of the convolutions of the demo CNN, the default CNN and ResNet-18
(48x48 inputs): forward, input gradient and weight gradient of every distinct 3x3/1x1 conv,
through XLA (ferjax's CPU tuning), ferjax.models.ops.conv2d (gemm), Winograd and PyTorch (oneDNN,
channels-last, 2 threads).

python -m bench.conv_layers [--models demo_cnn,cnn,resnet18] [--impls xla,wino4,best,torch]
                            [--repeats 5] [--reps 3] [--accuracy]
python -m bench.conv_layers --summarize bench/results/conv_layers-<time>.json

Parts: fwd, dx, dw and bwd (dx and dW from one backward pass, as a train step computes them; a
train step costs fwd + bwd per layer, fwd + dw for the stem). Each implementation runs in fresh
processes (one per repeat, all models' layers in one process), interleaved with the others and
with a float32 matmul-peak probe, each after a quiet-machine wait (bench/quiet.py); per layer
and part the median over the processes is reported (within a process: the median of --reps
calls after one warm-up call). Flops are direct-convolution flops (2 * B * Ho * Wo * KH * KW *
Cin * Cout per forward, dx or dW), whatever the algorithm. All processes run
with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as ferjax's CLI does (PyTorch gains from it too).
Writes bench/results/conv_layers-<UTC time>.json.

Implementations: xla | gemm (ferjax.models.ops.conv2d) | im2col (ferjax.models.ops.im2col) |
wino<tile>[-<weight_grad>][-bf16] (e.g. wino2, wino4-xla: Winograd F(tile x tile, 3x3) on 3x3
stride-1 layers with >= 8 input channels, XLA's convolution on the others, exactly as
ferjax.models.winograd_conv.WinogradConv; wino0: the tile per layer) | best (WinogradConv with
tile=0, others="gemm") | torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quiet, results_io  # noqa: E402

MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
PARTS = ("fwd", "dx", "dw", "bwd")


class Layer(NamedTuple):
    """One distinct convolution of a model: input [batch, size, size, cin], kernel k x k,
    `count` occurrences. needs_dx is False for the stem (its input needs no gradient)."""

    name: str
    batch: int
    size: int
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    count: int = 1
    needs_dx: bool = True

    @property
    def key(self) -> str:
        shape = f"{self.batch}x{self.size}x{self.size}x{self.cin}->{self.cout}"
        return f"{shape} k{self.kernel}s{self.stride}"

    @property
    def out_size(self) -> int:
        return -(-self.size // self.stride)

    def part_flops(self) -> float:
        """Direct-convolution flops of one of forward, dx or dW."""
        return 2.0 * self.batch * self.out_size**2 * self.kernel**2 * self.cin * self.cout

    def step_parts(self) -> tuple[str, ...]:
        """What a train step runs: forward and backward (dx and dW together; only dW for the
        stem, whose input needs no gradient)."""
        return ("fwd", "bwd") if self.needs_dx else ("fwd", "dw")

    def step_flops(self) -> float:
        return self.part_flops() * (3 if self.needs_dx else 2) * self.count


def _resnet18(batch: int = 64) -> list[Layer]:
    layers = [Layer("stem", batch, 48, 1, 64, needs_dx=False)]
    layers.append(Layer("stage1 3x3", batch, 48, 64, 64, count=4))
    size, cin = 48, 64
    for s, width in enumerate((128, 256, 512), start=2):
        layers.append(Layer(f"stage{s} 3x3 s2", batch, size, cin, width, stride=2))
        layers.append(Layer(f"stage{s} 1x1 s2", batch, size, cin, width, kernel=1, stride=2))
        size //= 2
        layers.append(Layer(f"stage{s} 3x3", batch, size, width, width, count=3))
        cin = width
    return layers


MODELS: dict[str, list[Layer]] = {
    "demo_cnn": [
        Layer("stage1", 128, 48, 1, 32, needs_dx=False),
        Layer("stage2", 128, 24, 32, 64),
        Layer("stage3", 128, 12, 64, 128),
    ],
    "cnn": [
        Layer("stage1 conv1", 128, 48, 1, 64, needs_dx=False),
        Layer("stage1 conv2", 128, 48, 64, 64),
        Layer("stage2 conv1", 128, 24, 64, 128),
        Layer("stage2 conv2", 128, 24, 128, 128),
        Layer("stage3 conv1", 128, 12, 128, 256),
        Layer("stage3 conv2", 128, 12, 256, 256),
        Layer("stage4 conv1", 128, 6, 256, 512),
        Layer("stage4 conv2", 128, 6, 512, 512),
    ],
    "resnet18": _resnet18(),
}


def distinct_layers(models: list[str]) -> list[Layer]:
    seen: dict[str, Layer] = {}
    for m in models:
        for layer in MODELS[m]:
            seen.setdefault(layer.key, layer)
    return list(seen.values())


# ----------------------------------------------------------------------------- children


def _median_ms(fn, args, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def parse_impl(impl: str) -> dict:
    """WinogradConv settings of an implementation name: wino<tile>[-<weight_grad>][-bf16]
    (e.g. wino4-xla: F(4x4) with XLA's dW; tile 0 = per layer; Winograd on every 3x3 stride-1
    layer of >= 8 input channels) or best (WinogradConv's defaults: tile per layer, Winograd on
    the layers this CPU's rule gives it, im2col GEMMs for the others)."""
    if impl == "best":
        return {"tile": 0, "others": "gemm"}
    parts = impl.split("-")
    spec = {"tile": int(parts[0][4:]), "others": "xla", "min_winograd_in": 8}
    for p in parts[1:]:
        if p == "bf16":
            spec["gemm_dtype"] = "bfloat16"
        else:
            spec["weight_grad"] = p
    return spec


def jax_conv_fn(impl: str, layer: Layer):
    """(x [B, H, W, Cin], w [k, k, Cin, Cout]) -> y for one ferjax implementation."""
    from jax import lax

    from ferjax.models.ops import conv2d
    from ferjax.models.ops.im2col import im2col_conv
    from ferjax.models.winograd_conv import cpu_conv

    strides = (layer.stride, layer.stride)
    if impl == "xla":
        return lambda x, w: lax.conv_general_dilated(
            x, w, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    if impl == "gemm":
        return lambda x, w: conv2d(x, w, strides, "SAME")
    if impl == "im2col":
        return lambda x, w: im2col_conv(x, w, strides, "SAME")
    if impl.startswith("wino") or impl == "best":
        spec = parse_impl(impl)
        return lambda x, w: cpu_conv(x, w, strides, "SAME", **spec)
    raise ValueError(f"unknown implementation {impl!r}")


def run_jax(impl: str, layers: list[Layer], reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    out = {}
    for layer in layers:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((layer.batch, layer.size, layer.size, layer.cin), np.float32)
        x = jnp.asarray(np.maximum(x, 0))
        w = rng.standard_normal((layer.kernel, layer.kernel, layer.cin, layer.cout), np.float32)
        w = jnp.asarray(w * np.sqrt(2.0 / (layer.kernel**2 * layer.cin)))
        dy = rng.standard_normal((layer.batch, layer.out_size, layer.out_size, layer.cout))
        dy = jnp.asarray(dy, jnp.float32)
        conv = jax_conv_fn(impl, layer)
        fns = {
            "fwd": jax.jit(lambda x, w, dy, conv=conv: conv(x, w)),
            "dx": jax.jit(lambda x, w, dy, c=conv: jax.vjp(lambda a: c(a, w), x)[1](dy)[0]),
            "dw": jax.jit(lambda x, w, dy, c=conv: jax.vjp(lambda b: c(x, b), w)[1](dy)[0]),
            "bwd": jax.jit(lambda x, w, dy, c=conv: jax.vjp(c, x, w)[1](dy)),
        }
        row = {}
        for part, fn in fns.items():
            call = lambda x, w, dy, fn=fn: jax.block_until_ready(fn(x, w, dy))  # noqa: E731
            call(x, w, dy)
            row[part] = _median_ms(call, (x, w, dy), reps)
        out[layer.key] = row
    return out


def run_torch(layers: list[Layer], reps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cl = torch.channels_last
    out = {}
    with torch.no_grad():
        for layer in layers:
            x = torch.randn(layer.batch, layer.cin, layer.size, layer.size).relu()
            x = x.contiguous(memory_format=cl)
            w = torch.randn(layer.cout, layer.cin, layer.kernel, layer.kernel)
            w = (w * (2.0 / (layer.kernel**2 * layer.cin)) ** 0.5).contiguous(memory_format=cl)
            o = layer.out_size
            dy = torch.randn(layer.batch, layer.cout, o, o).contiguous(memory_format=cl)
            stride, pad = [layer.stride] * 2, [layer.kernel // 2] * 2

            def backward(mask, dy=dy, x=x, w=w, stride=stride, pad=pad):
                return torch.ops.aten.convolution_backward(
                    dy, x, w, None, stride, pad, [1, 1], False, [0, 0], 1, mask
                )

            fns = {
                "fwd": lambda x=x, w=w, s=stride, p=pad: torch.nn.functional.conv2d(
                    x, w, None, s, p
                ),
                "dx": lambda b=backward: b([True, False, False]),
                "dw": lambda b=backward: b([False, True, False]),
                "bwd": lambda b=backward: b([True, True, False]),
            }
            row = {}
            for part, fn in fns.items():
                fn()
                row[part] = _median_ms(fn, (), reps)
            out[layer.key] = row
    return out


def run_peak(size: int = 3072, reps: int = 5) -> dict:
    """Best float32 [size, size] matmul GFLOP/s through XLA and through numpy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    aj = jnp.asarray(a)
    mm = jax.jit(lambda x: x @ x)
    mm(aj).block_until_ready()
    flops = 2.0 * size**3
    best = {"xla": 0.0, "numpy": 0.0}
    for _ in range(reps):
        t = time.perf_counter()
        mm(aj).block_until_ready()
        best["xla"] = max(best["xla"], flops / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        a @ a
        best["numpy"] = max(best["numpy"], flops / (time.perf_counter() - t) / 1e9)
    return best


def child_main(impl: str, models: list[str], reps: int) -> None:
    if impl == "peak":
        result = run_peak()
    elif impl == "torch":
        result = {"layers": run_torch(distinct_layers(models), reps)}
    else:
        import ferjax  # noqa: F401 - XLA's CPU flags before the first computation

        result = {"layers": run_jax(impl, distinct_layers(models), reps)}
    print(json.dumps(result))


# ----------------------------------------------------------------------------- accuracy


def accuracy(impls: list[str], batch: int = 8) -> dict:
    """Max relative error (max |err| / max |ref|) of y, dx and dW against a float64 reference,
    per distinct 3x3 stride-1 layer shape (batch `batch`), on ReLU activations, He-initialised
    kernels and normal cotangents. Run in a process with jax_enable_x64."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    jax.config.update("jax_enable_x64", True)
    shapes = {}
    for layers in MODELS.values():
        for layer in layers:
            if layer.kernel == 3 and layer.stride == 1 and layer.cin >= 8:
                shapes[(layer.size, layer.cin, layer.cout)] = layer._replace(batch=batch)

    def parts(conv, x, w, dy):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(dy))

    xla = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    out = {}
    for layer in shapes.values():
        rng = np.random.default_rng(1)
        x = np.maximum(rng.standard_normal((batch, layer.size, layer.size, layer.cin)), 0)
        w = rng.standard_normal((3, 3, layer.cin, layer.cout)) * np.sqrt(2 / (9 * layer.cin))
        dy = rng.standard_normal((batch, layer.size, layer.size, layer.cout))
        ref = jax.jit(lambda x, w, dy: parts(xla, x, w, dy))(x, w, dy)
        f32 = [jnp.asarray(v, jnp.float32) for v in (x, w, dy)]
        row = {}
        for impl in impls:
            conv = jax_conv_fn(impl, layer)
            got = jax.jit(lambda x, w, dy, conv=conv: parts(conv, x, w, dy))(*f32)
            row[impl] = {
                p: float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r)))
                for p, g, r in zip(PARTS, got, ref)
            }
        out[layer.key] = row
    return out


# ----------------------------------------------------------------------------- report


def summarize(result: dict, models: list[str], impls: list[str]) -> dict:
    """Per model and layer: ms per part and total (the parts a train step needs, times the
    layer's count), GFLOP/s, fraction of the matmul peak and the speed ratio to torch."""
    peak = result["peak_gflops"]
    med = {impl: result["interleave"]["runners"][impl]["median"] for impl in impls}
    tables = {}
    for model in models:
        rows, totals = [], {impl: 0.0 for impl in impls}
        flops_total = 0.0
        for layer in MODELS[model]:
            parts = layer.step_parts()
            flops = layer.step_flops()
            flops_total += flops
            row = {"layer": layer.name, "key": layer.key, "count": layer.count, "impls": {}}
            for impl in impls:
                ms = {p: med[impl][f"layers/{layer.key}/{p}"] for p in PARTS}
                total = sum(ms[p] for p in parts) * layer.count
                totals[impl] += total
                row["impls"][impl] = {"ms": ms, "step_ms": total}
            row["gflop"] = flops / 1e9
            rows.append(row)
        for row in rows:
            torch_ms = row["impls"].get("torch", {}).get("step_ms")
            for cell in row["impls"].values():
                cell["gflops"] = row["gflop"] / cell["step_ms"] * 1e3
                cell["peak_frac"] = cell["gflops"] / peak
                cell["vs_torch"] = torch_ms / cell["step_ms"] if torch_ms else None
        ours = [i for i in impls if i != "torch"]
        # Per layer, the fastest ferjax implementation measured.
        best_ms = [min(r["impls"][i]["step_ms"] for i in ours) for r in rows] if ours else []
        tables[model] = {
            "rows": rows,
            "total_ms": totals,
            "best_per_layer_ms": sum(best_ms) if ours else None,
            "floor_ms": floor_ms(rows, best_ms, peak) if ours else None,
            "gflop": flops_total / 1e9,
        }
    return tables


def floor_ms(rows: list[dict], best_ms: list[float], peak: float) -> float:
    """A floor for ferjax's convolutions: per layer the lower of the best measured
    implementation (best_ms, in the order of rows) and the layer's direct-convolution flops at
    the matmul peak (what a GEMM formulation at XLA's best speed would take). Only algorithms
    with fewer flops (Winograd) can go below the second; their measured times enter through the
    first."""
    return sum(min(b, r["gflop"] / peak * 1e3) for r, b in zip(rows, best_ms, strict=True))


def markdown(tables: dict, impls: list[str], peak: float) -> str:
    lines = []
    for model, t in tables.items():
        lines.append(
            f"\n### {model} (cells: ms per train step = count x (fwd + bwd); "
            f"GFLOP/s; % of the {peak:.0f} GFLOP/s matmul peak; speed vs torch)\n"
        )
        head = "| layer | count | GFLOP | " + " | ".join(impls) + " |"
        lines += [head, "|" + "---|" * (len(impls) + 3)]
        for r in t["rows"]:
            cells = []
            for impl in impls:
                c = r["impls"][impl]
                vs = f" {c['vs_torch']:.2f}x" if c["vs_torch"] else ""
                cells.append(
                    f"{c['step_ms']:.0f} / {c['gflops']:.0f} / {100 * c['peak_frac']:.0f}%{vs}"
                )
            lines.append(
                f"| {r['layer']} ({r['key']}) | {r['count']} | {r['gflop']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
        tot = t["total_ms"]
        torch_total = tot.get("torch")
        cells = []
        for impl in impls:
            gf = t["gflop"] / tot[impl] * 1e3
            vs = f" {torch_total / tot[impl]:.2f}x" if torch_total else ""
            cells.append(f"**{tot[impl]:.0f}** / {gf:.0f} / {100 * gf / peak:.0f}%{vs}")
        lines.append(f"| **sum** | | {t['gflop']:.1f} | " + " | ".join(cells) + " |")
        if t["best_per_layer_ms"]:
            best = t["best_per_layer_ms"]
            vs = f", {torch_total / best:.2f}x torch" if torch_total else ""
            lines.append(f"\nbest ferjax impl per layer: {best:.0f} ms{vs}")
        if t["floor_ms"]:
            floor = t["floor_ms"]
            vs = f", {torch_total / floor:.2f}x torch" if torch_total else ""
            lines.append(
                f"floor (per layer the best impl or its direct flops at the {peak:.0f} GFLOP/s "
                f"matmul peak, whichever is lower): {floor:.0f} ms{vs}"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn,cnn,resnet18")
    parser.add_argument("--impls", default="xla,gemm,im2col,wino2,wino4,best,torch")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per impl")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per process")
    parser.add_argument("--max-other-cores", type=float, default=0.15)
    parser.add_argument("--accuracy", action="store_true", help="also float64-referenced errors")
    parser.add_argument("--accuracy-only", action="store_true")
    parser.add_argument("--summarize", default="", help="re-summarize a stored result (JSON)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    models = args.models.split(",")
    impls = args.impls.split(",")
    if args.summarize:
        stored = json.loads(Path(args.summarize).read_text())
        tables = summarize(stored, stored["models"], stored["impls"])
        print(markdown(tables, stored["impls"], stored["peak_gflops"]))
        return {**stored, "tables": tables}
    if args.child == "accuracy":
        print(json.dumps(accuracy([i for i in impls if i not in ("torch", "gemm")])))
        return {}
    if args.child:
        child_main(args.child, models, args.reps)
        return {}

    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLE, TF_CPP_MIN_LOG_LEVEL="3")
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result: dict = {
        "time": now,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "models": models,
        "impls": impls,
        "repeats": args.repeats,
        "reps": args.reps,
        "env": {"GLIBC_TUNABLES": MALLOC_TUNABLE},
        "layers": {m: [layer._asdict() for layer in MODELS[m]] for m in models},
    }
    me = [sys.executable, "-m", "bench.conv_layers", "--models", args.models]
    if not args.accuracy_only:
        runners = {"peak": [*me, "--child", "peak"]}
        for impl in impls:
            runners[impl] = [*me, "--child", impl, "--reps", str(args.reps)]
        result["interleave"] = quiet.interleave(
            runners, args.repeats, max_other_cores=args.max_other_cores, env=env
        )
        result["quiet"] = quiet.quiet_summary(result["interleave"])
        result["loadavg_end"] = quiet.loadavg()
        peak = result["interleave"]["runners"]["peak"]["median"]["xla"]
        result["peak_gflops"] = peak
        result["tables"] = summarize(result, models, impls)
        print(markdown(result["tables"], impls, peak))
        print(f"\nquiet: {json.dumps(result['quiet'])}")
    if args.accuracy or args.accuracy_only:
        import subprocess

        proc = subprocess.run(
            [*me, "--impls", args.impls, "--child", "accuracy"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        result["accuracy"] = quiet.parse_result_line(proc.stdout)
        print("\nmax relative error vs float64 (y / dx / dW):")
        for key, row in result["accuracy"].items():
            cells = ", ".join(
                f"{i} {v['fwd']:.1e}/{v['dx']:.1e}/{v['dw']:.1e}" for i, v in row.items()
            )
            print(f"  {key}: {cells}")
    results_io.save(result, args.out, "conv_layers", now)
    return result


if __name__ == "__main__":
    main()
