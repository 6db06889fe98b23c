"""XLA CPU flags: added before JAX starts, the user's own settings win, the GPU compiler's
optimisation level is left alone where a GPU/TPU plugin is installed."""

from __future__ import annotations

import pytest

from ferjax.runtime import platform


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(platform, "_jaxlib_version", lambda: (0, 10))
    monkeypatch.setattr(platform, "_backends_initialized", lambda: False)
    monkeypatch.setattr(platform, "_accelerator_plugin_installed", lambda: False)
    monkeypatch.delenv(platform.SWITCH, raising=False)
    return monkeypatch


def test_flags_added_once_each(fresh):
    fresh.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    added = platform.configure_xla_cpu()
    assert added == list(platform.XLA_CPU_FLAGS)
    flags = platform.os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert f"{platform.OPT_FLAG}=2" in flags
    assert platform.configure_xla_cpu() == []  # a second call adds nothing


def test_users_flags_win(fresh):
    fresh.setenv("XLA_FLAGS", f"{platform.OPT_FLAG}=3 {platform.YNN_FLAG}=LIBRARY_FUSION_TYPE_NONE")
    assert platform.configure_xla_cpu() == []
    assert platform.os.environ["XLA_FLAGS"].count(platform.OPT_FLAG) == 1


def test_no_opt_level_where_an_accelerator_plugin_is_installed(fresh):
    fresh.setattr(platform, "_accelerator_plugin_installed", lambda: True)
    fresh.setenv("XLA_FLAGS", "")
    assert [f.split("=")[0] for f in platform.configure_xla_cpu()] == [platform.YNN_FLAG]


def test_switch_off_adds_nothing(fresh):
    fresh.setenv(platform.SWITCH, "0")
    fresh.setenv("XLA_FLAGS", "")
    assert platform.configure_xla_cpu() == []
    assert platform.os.environ["XLA_FLAGS"] == ""
