"""The command-line convention of every tool (ferjax/tools/flags.py), in-process."""

from __future__ import annotations

import importlib

import pytest
from conftest import TINY, call_tool

from ferjax.errors import ConfigError
from ferjax.tools.flags import load_config, parse_value, split_overrides

TOOLS = ("main", "evaluate", "predict", "export", "compare", "convert", "preview", "ablate")


def tool(name):
    return importlib.import_module(f"ferjax.tools.{name}").main


@pytest.mark.parametrize("name", TOOLS)
def test_help_exits_zero_and_lists_every_flag(name, capsys):
    assert call_tool(tool(name), ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m ferjax.{name}")
    parser_flags = {"main": ["--workdir", "--coordinator_address"], "evaluate": ["--split"],
                    "export": ["--format", "--batch_size"], "preview": ["--out", "--count"],
                    "ablate": ["--levers", "--seeds"]}  # fmt: skip
    for flag in parser_flags.get(name, []):
        assert flag in out, flag
    if name in ("main", "preview", "ablate"):
        assert "--config.KEY=VALUE" in out and "configs/default.py" in out


@pytest.mark.parametrize("name", TOOLS)
def test_no_arguments_prints_the_usage_in_one_line(name, capsys):
    assert call_tool(tool(name), []) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m ferjax.{name}") and err.count("\n") == 1


def test_unknown_config_key_names_the_nearest(capsys):
    argv = [f"--config={TINY}", "--workdir=/tmp/unused", "--config.train.num_epoch=3"]
    assert call_tool(tool("main"), argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --config.train.num_epoch: unknown config key; did you mean 'train.num_epochs'? "
        "(every key is defined and documented in configs/default.py)\n"
    )


def test_bad_flag_is_one_line(capsys):
    assert call_tool(tool("evaluate"), ["--workdir=x", "--split=dev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --split: invalid choice: 'dev'") and err.count("\n") == 1


def test_overrides_are_typed_like_the_key():
    config = load_config(
        TINY,
        [("train.num_epochs", "3"), ("optim.learning_rate", "1e-3"), ("data.classes", "happy,sad"),
         ("data.equalize", "true"), ("augment.ops", "")],
    )  # fmt: skip
    assert config.train.num_epochs == 3 and type(config.train.num_epochs) is int
    assert config.optim.learning_rate == 1e-3 and config.data.classes == "happy,sad"
    assert config.data.equalize is True and config.augment.ops == ""
    with pytest.raises(ConfigError, match="--config.train.num_epochs: expected an integer"):
        load_config(TINY, [("train.num_epochs", "3.5")])
    with pytest.raises(ConfigError, match="--config.data.equalize: expected true or false"):
        load_config(TINY, [("data.equalize", "maybe")])
    with pytest.raises(ConfigError, match="--config.train: a section, not a key"):
        load_config(TINY, [("train", "1")])
    assert parse_value("0.5", 1.0, "k") == 0.5 and parse_value("7", 1.0, "k") == 7.0


def test_override_forms_and_config_arguments(tmp_path):
    assert split_overrides(["--config.a.b=1", "--x", "--config.c", "2"]) == (
        [("a.b", "1"), ("c", "2")],
        ["--x"],
    )
    path = tmp_path / "c.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config(arg='small'):\n"
        "    return ml_collections.ConfigDict({'size': {'small': 1, 'big': 2}[arg]})\n"
    )
    assert load_config(str(path), []).size == 1
    assert load_config(f"{path}:big", []).size == 2
    with pytest.raises(ConfigError, match=r"^--config: cannot load .*c.py \(KeyError: 'huge'\)"):
        load_config(f"{path}:huge", [])
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(str(tmp_path / "missing.py"), [])
