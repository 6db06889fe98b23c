"""Shared test helpers: a tiny, fast config on procedural faces."""

import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_config(name: str = "default"):
    return runpy.run_path(str(ROOT / "configs" / f"{name}.py"))["get_config"]()


def tiny_config(**overrides):
    """tests/configs/tiny.py with overrides given as section__key=value."""
    config = runpy.run_path(str(ROOT / "tests" / "configs" / "tiny.py"))["get_config"]()
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
