"""Exception types for user mistakes.

Every error a user can cause (bad path, malformed file, invalid config value) is raised as a
subclass of `FerjaxError` with a message that fits on one line and names the file, the row or
key, and what was expected. Entry points print that line and exit non-zero, without a traceback.
"""


class FerjaxError(Exception):
    """A user-facing error: printed as one line by the command-line entry points."""

    exit_code = 2


class ConfigError(FerjaxError):
    """An unknown config key or an invalid config value."""


class DataFormatError(FerjaxError):
    """A data file or folder that does not have the expected format."""


class DataNotFoundError(FerjaxError):
    """A data file or folder that does not exist."""


class CheckpointError(FerjaxError):
    """A checkpoint that cannot be used (missing, incompatible or corrupt)."""


class TrainingDiverged(FerjaxError):
    """A non-finite loss or gradient (train.on_nan=stop, or rollbacks exhausted)."""

    exit_code = 3


class Preempted(FerjaxError):
    """SIGTERM/SIGINT: a checkpoint was written at the current step; re-run to resume."""

    exit_code = 75  # EX_TEMPFAIL: try again


class OutOfMemory(FerjaxError):
    """The accelerator (or host) ran out of memory: the message says what to lower."""

    exit_code = 4


OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")
OOM_HINT = (
    "lower train.batch_size, train.eval_batch_size (or eval.memory_budget_mb), data.image_size "
    "or the model's size (model.width, model.cnn_widths)"
)


def out_of_memory(error: BaseException) -> OutOfMemory | None:
    """An OutOfMemory naming what ran out and what to lower, when `error` is an allocation
    failure (XLA's RESOURCE_EXHAUSTED, a MemoryError); else None."""
    text = str(error)
    if not isinstance(error, MemoryError) and not any(m in text for m in OOM_MARKERS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return OutOfMemory(f"out of memory ({first[:160]}): {OOM_HINT}")
