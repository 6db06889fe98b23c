"""Shared plumbing of the command-line tools: quiet TensorFlow, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Calls main(argv) and exits with its status; a FerjaxError becomes `error: ...` on stderr
    and its exit code (no traceback: these are user mistakes)."""
    from ferjax.errors import FerjaxError

    try:
        code = main(argv)
    except FerjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code or 0)
