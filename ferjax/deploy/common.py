"""What every export shares: its error type and labels.txt."""

from __future__ import annotations

import os

from ferjax.runtime.errors import FerjaxError


class ExportError(FerjaxError):
    """The model could not be exported or the export does not reproduce JAX's outputs."""


def write_labels(run, folder: str) -> None:
    """labels.txt in `folder`: the class of each output column, one a line, in order."""
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(run.class_names) + "\n")
