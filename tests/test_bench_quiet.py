"""bench.quiet: /proc parsing, CPU accounting, statistics and the interleaving order."""

import sys

import pytest

from bench import quiet

PROC_STAT = """cpu  26837 5 4433 80632 340 7 51 34 100 0
cpu0 9344 0 1454 45243 75 0 11 13 0 0
cpu1 17492 5 2978 35388 264 7 40 21 100 0
intr 1 2 3
ctxt 12345
"""


def test_parse_proc_stat_counts_busy_total_steal_and_cpus():
    m = quiet.parse_proc_stat(PROC_STAT)
    assert m.busy == 26837 + 5 + 4433 + 7 + 51 + 34
    assert m.total == 26837 + 5 + 4433 + 80632 + 340 + 7 + 51 + 34  # guest is inside user
    assert m.steal == 34
    assert m.cpus == 2


def test_parse_proc_stat_rejects_text_without_cpu_line():
    with pytest.raises(ValueError, match="cpu"):
        quiet.parse_proc_stat("intr 1 2\n")


def test_parse_pid_stat_sums_user_system_and_children_with_odd_command_names():
    fields = "S 1 2 3 0 -1 4194304 100 0 0 0 11 22 33 44 20 0 1 0 56202 3133440 393"
    assert quiet.parse_pid_stat(f"5972 (cat) {fields}") == 11 + 22 + 33 + 44
    assert quiet.parse_pid_stat(f"5972 (a b) (c)) {fields}") == 11 + 22 + 33 + 44


def test_own_jiffies_of_this_process_is_readable():
    assert quiet.own_jiffies() >= 0


def _snap(busy, total, own, steal=0):
    return quiet.Snapshot(quiet.MachineTimes(busy, total, steal, cpus=2), own, wall=0.0)


def test_other_cores_subtracts_own_time_and_scales_to_cores():
    # 200 jiffies over 2 CPUs = 1 s: 150 busy of which 100 are ours -> 0.5 other cores.
    r = quiet.other_cores(_snap(0, 0, 0), _snap(150, 200, 100, steal=20))
    assert r["other_cores"] == pytest.approx(0.5)
    assert r["own_cores"] == pytest.approx(1.0)
    assert r["steal_cores"] == pytest.approx(0.2)
    # Accounting skew (own ahead of the machine) never gives negative use.
    assert quiet.other_cores(_snap(0, 0, 0), _snap(10, 200, 30))["other_cores"] == 0.0


def test_parse_result_line_takes_the_last_json_object_line():
    out = 'compiling...\n{"a": 1}\nnot json {\n{"b": 2.5, "c": {"d": 3}}\n\n'
    assert quiet.parse_result_line(out) == {"b": 2.5, "c": {"d": 3}}
    with pytest.raises(ValueError, match="no JSON"):
        quiet.parse_result_line("[1, 2]\nhello\n")


def test_summarize_median_min_max_over_nested_numeric_leaves():
    samples = [
        {"ms": 3.0, "layer": {"fwd": 1, "dx": 10}, "name": "x", "ok": True},
        {"ms": 1.0, "layer": {"fwd": 5, "dx": 30}},
        {"ms": 2.0, "layer": {"fwd": 3}},
        {"ms": 10.0},
    ]
    s = quiet.summarize(samples)
    assert s["median"] == {"ms": 2.5, "layer/fwd": 3.0, "layer/dx": 20.0}
    assert s["min"] == {"ms": 1.0, "layer/fwd": 1.0, "layer/dx": 10.0}
    assert s["max"] == {"ms": 10.0, "layer/fwd": 5.0, "layer/dx": 30.0}
    assert s["n"] == {"ms": 4, "layer/fwd": 3, "layer/dx": 2}


def test_interleave_alternates_runners_and_records_quiet_per_sample():
    prog = "import json, sys; print('log'); print(json.dumps({{'v': {v}}}))"
    runners = {
        "a": [sys.executable, "-c", prog.format(v=1)],
        "b": [sys.executable, "-c", prog.format(v=2)],
    }
    # A threshold no machine exceeds: the test checks bookkeeping, not the machine.
    r = quiet.interleave(runners, repeats=3, max_other_cores=1e9, window_s=0.01, verbose=False)
    assert r["order"] == ["a", "b", "a", "b", "a", "b"]
    assert r["runners"]["a"]["median"] == {"v": 1.0}
    assert r["runners"]["b"]["samples"] == [{"v": 2}] * 3
    for q in r["runners"]["a"]["quiet"]:
        assert set(q) >= {"other_cores", "loadavg", "waited_s", "gave_up", "during"}
        assert q["gave_up"] is False and q["during"]["other_cores"] >= 0.0
    assert quiet.quiet_summary(r)["samples"] == 6


def test_interleave_reports_a_failing_runner():
    runners = {"bad": [sys.executable, "-c", "import sys; sys.exit(3)"]}
    with pytest.raises(RuntimeError, match="bad.*3"):
        quiet.interleave(runners, repeats=1, max_other_cores=1e9, window_s=0.01, verbose=False)


def test_wait_until_quiet_gives_up_after_max_wait():
    r = quiet.wait_until_quiet(max_other_cores=-1.0, window_s=0.01, max_wait_s=0.0)
    assert r["gave_up"] is True and r["windows"] == 1 and len(r["loadavg"]) == 3
