"""bench.conv_layers' summary: per-layer totals, the best implementation per layer and the
floor (best measured or direct flops at the matmul peak, whichever is lower)."""

import pytest

from bench import conv_layers


def _result(times: dict[str, float], peak: float) -> dict:
    """A stored result whose every part of every demo_cnn layer takes times[impl] ms."""
    runners = {}
    for impl, ms in times.items():
        median = {
            f"layers/{layer.key}/{part}": ms
            for layer in conv_layers.MODELS["demo_cnn"]
            for part in conv_layers.PARTS
        }
        runners[impl] = {"median": median}
    return {"interleave": {"runners": runners}, "peak_gflops": peak}


def test_floor_takes_per_layer_the_lower_of_measured_and_flops_at_peak():
    layers = conv_layers.MODELS["demo_cnn"]
    peak = 100.0  # GFLOP/s
    result = _result({"xla": 10.0, "wino4": 20.0, "torch": 5.0}, peak)
    table = conv_layers.summarize(result, ["demo_cnn"], ["xla", "wino4", "torch"])["demo_cnn"]
    # Per layer: xla's time (the faster of the two measured) and the direct flops at the peak.
    measured = [10.0 * len(layer.step_parts()) * layer.count for layer in layers]
    at_peak = [layer.step_flops() / 1e9 / peak * 1e3 for layer in layers]
    expected = sum(min(m, p) for m, p in zip(measured, at_peak, strict=True))
    # Premise: the rule picks differently per layer (one layer is faster at the peak, one not).
    at_peak_wins = [p < m for m, p in zip(measured, at_peak, strict=True)]
    assert any(at_peak_wins) and not all(at_peak_wins)
    assert table["floor_ms"] == pytest.approx(expected)
    assert table["best_per_layer_ms"] == pytest.approx(sum(measured))
    assert table["floor_ms"] < table["best_per_layer_ms"]
    text = conv_layers.markdown({"demo_cnn": table}, ["xla", "wino4", "torch"], peak)
    torch_total = table["total_ms"]["torch"]
    assert f"{expected:.0f} ms, {torch_total / expected:.2f}x torch" in text
