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
