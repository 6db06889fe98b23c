"""ferjax.runtime.cpu: the per-core matmul probe is measured once per CPU signature and then
read back; auto's Winograd choice follows it."""

import json

import pytest

from ferjax.runtime import cpu


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """The probe with a counted, fixed measurement and its file in tmp_path."""
    calls = []

    def measure():
        calls.append(1)
        return 2 * 95.04  # GFLOP/s of 2 cores of a half-width AVX-512 unit

    monkeypatch.setattr(cpu, "measure_matmul_gflops", measure)
    monkeypatch.setattr(cpu, "cores", lambda: 2)
    monkeypatch.setattr(cpu, "_measured", {})
    monkeypatch.setenv("FERJAX_CACHE", str(tmp_path))
    return calls, tmp_path / cpu.PROBE_FILE


def test_measured_once_per_cpu_then_read_back(probe, monkeypatch):
    calls, path = probe
    assert cpu.matmul_gflops_per_core() == 95.0 and len(calls) == 1
    stored = json.loads(path.read_text())
    assert list(stored) == [cpu.signature()]
    assert stored[cpu.signature()]["matmul_gflops_per_core"] == 95.0
    monkeypatch.setattr(cpu, "_measured", {})  # a new process: read from the file
    assert cpu.matmul_gflops_per_core() == 95.0 and len(calls) == 1
    assert cpu.winograd_pays()  # 95 < 120: slow GEMMs, Winograd wins
    # Another CPU (here: another core count) is measured and kept beside the first.
    monkeypatch.setattr(cpu, "_measured", {})
    monkeypatch.setattr(cpu, "cores", lambda: 1)
    assert cpu.matmul_gflops_per_core() == 190.1 and len(calls) == 2
    assert len(json.loads(path.read_text())) == 2
    assert not cpu.winograd_pays()


def test_a_damaged_probe_file_is_measured_again(probe):
    calls, path = probe
    path.write_text("{not json")
    assert cpu.matmul_gflops_per_core() == 95.0 and len(calls) == 1
    assert json.loads(path.read_text())[cpu.signature()]["matmul_gflops_per_core"] == 95.0


def test_signature_names_the_cpu_and_jaxlib(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 fma avx512f avx512bw\n\n"
        "processor\t: 1\n"
    )
    key = cpu.signature(str(info))
    assert key.startswith("AMD EPYC 9B14 | family 25 model 17 | avx2,fma,avx512f,avx512bw | ")
    assert "jaxlib 0." in key


def test_the_real_measurement_is_a_plausible_number():
    gflops = cpu.measure_matmul_gflops(size=256, repeats=2)
    assert 0.5 < gflops < 1e5
