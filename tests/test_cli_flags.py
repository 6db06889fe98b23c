"""The command-line convention of every tool (ferjax/cli/flags.py), in-process."""

from __future__ import annotations

import importlib

import pytest
from conftest import TINY, call_tool

from ferjax.cli.flags import split_overrides
from ferjax.config.overrides import load_config, parse_value
from ferjax.runtime.errors import ConfigError

TOOLS = ("train", "evaluate", "predict", "export", "compare", "convert", "preview", "ablate")


def tool(name):
    return importlib.import_module(f"ferjax.cli.{name}").main


@pytest.mark.parametrize("name", TOOLS)
def test_help_exits_zero_and_lists_every_flag(name, capsys):
    assert call_tool(tool(name), ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ferjax {name}")
    parser_flags = {"train": ["--workdir", "--coordinator_address"], "evaluate": ["--split"],
                    "export": ["--format", "--batch_size"], "preview": ["--out", "--count"],
                    "ablate": ["--levers", "--seeds"]}  # fmt: skip
    for flag in parser_flags.get(name, []):
        assert flag in out, flag
    if name in ("train", "preview", "ablate"):
        assert "--config.KEY=VALUE" in out and "configs/default.py" in out


@pytest.mark.parametrize("name", TOOLS)
def test_no_arguments_prints_the_usage_in_one_line(name, capsys):
    assert call_tool(tool(name), []) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: ferjax {name}") and err.count("\n") == 1


def test_unknown_config_key_names_the_nearest(capsys):
    argv = [f"--config={TINY}", "--workdir=/tmp/unused", "--config.train.num_epoch=3"]
    assert call_tool(tool("train"), argv) == 2
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


def test_ferjax_command_lists_and_dispatches_every_tool(capsys):
    """`ferjax --help` lists every tool of ferjax.cli.TOOLS (each a module with main), `ferjax
    <tool> --help` reaches that tool's parser, an unknown tool is one line with a suggestion."""
    from ferjax.cli import TOOLS as COMMANDS
    from ferjax.cli import main as ferjax_main

    assert set(TOOLS) <= set(COMMANDS)
    with pytest.raises(SystemExit) as e:
        ferjax_main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f"  {name} " in out for name in COMMANDS)
    for name in COMMANDS:
        assert callable(tool(name))
    with pytest.raises(SystemExit) as e:
        ferjax_main(["evaluate", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: ferjax evaluate")
    with pytest.raises(SystemExit) as e:
        ferjax_main(["evalute"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == (
        "error: unknown tool 'evalute'; did you mean 'evaluate'? (ferjax --help lists them)\n"
    )


def test_module_entry_points_exit_zero_on_help():
    """The documented entries as a user types them: python -m ferjax <tool> and
    python -m ferjax.main."""
    from conftest import cli

    for tool_name in ("predict", "main"):
        r = cli(tool_name, "--help")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: ferjax {'train' if tool_name == 'main' else tool_name}")


def test_out_of_memory_is_one_line_saying_what_to_lower(capsys):
    """A real allocation failure of XLA (16 TiB on this machine) ends in one line naming the
    failed allocation and the settings to lower, exit 4, no traceback."""
    import jax.numpy as jnp

    from ferjax.cli.flags import run

    def main(argv):
        jnp.zeros((2**42,), jnp.float32).block_until_ready()

    with pytest.raises(SystemExit) as e:
        run(main, [])
    err = capsys.readouterr().err
    assert e.value.code == 4 and err.count("\n") == 1
    assert err.startswith("error: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating")
    assert "lower train.batch_size, train.eval_batch_size" in err and "Traceback" not in err
