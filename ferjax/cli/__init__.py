"""The `ferjax` command: `ferjax <tool> [flags]` (also `python -m ferjax <tool>`).

One module per tool in this package, all following the convention of ferjax/cli/flags.py.
`python -m ferjax.main --config=...` is the same as `ferjax train --config=...`.
"""

from __future__ import annotations

import importlib
import sys

# tool -> (module under ferjax.cli, one line for `ferjax --help`)
TOOLS = {
    "train": ("train", "train a model from a config (resumes in the same workdir)"),
    "evaluate": ("evaluate", "evaluate a finished run on a split or a data file"),
    "predict": ("predict", "classify the faces in photos (one JSON object per face)"),
    "export": ("export", "export a run as a SavedModel or TFLite file"),
    "convert": ("convert", "convert ImageNet weights (Keras, PyTorch) for model.init_from"),
    "compare": ("compare", "compare the reports of several runs"),
    "preview": ("preview", "draw a grid of augmented training faces"),
    "ablate": ("ablate", "run a recipe with each lever changed one at a time"),
    "study": ("study", "compare class-imbalance remedies on your data over several seeds"),
}


def usage() -> str:
    width = max(map(len, TOOLS))
    lines = ["usage: ferjax <tool> [flags]   (ferjax <tool> --help for a tool's flags)", ""]
    lines += [f"  {name:<{width}}  {TOOLS[name][1]}" for name in TOOLS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Dispatches `ferjax <tool> ARGS` to ferjax.cli.<tool>.main(ARGS)."""
    own_process = argv is None  # the `ferjax` script, not a call from Python
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        sys.stderr.write(usage() + "\n")
        sys.exit(2)
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0)
    tool, rest = argv[0], argv[1:]
    if tool not in TOOLS:
        from ferjax.runtime.registry import did_you_mean

        sys.stderr.write(
            f"error: unknown tool {tool!r}{did_you_mean(tool, TOOLS)} (ferjax --help lists them)\n"
        )
        sys.exit(2)
    if tool == "train":
        from ferjax.runtime import platform

        # Before JAX and TensorFlow are imported: the allocator setting needs a fresh process.
        platform.reexec_with_malloc_tuning("ferjax", ["train", *rest])
    from ferjax.cli.flags import run, run_training_command

    module = importlib.import_module(f"ferjax.cli.{TOOLS[tool][0]}")
    if tool == "train" and own_process:  # the command's process: no teardown at its end
        run_training_command(module.main, rest)
    else:
        run(module.main, rest)
