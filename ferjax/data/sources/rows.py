"""Bad rows (or files) of a data source, collected over the whole source and reported at once.

Every reader validates every row. A bad row is recorded with where it is (`row 12 (line 13)`,
or an image path), a short reason (counted) and a detail that says what was expected. At the end
of reading, `finish()` either raises one `BadRowsError` listing the first `MAX_SHOWN` bad rows,
a count per reason and a hint (`data.on_error=raise`), or prints a count per reason and the
first example of each to stderr and leaves the rows out (`data.on_error=skip`). Either way a
user fixing a file sees all of its problems in one run.
"""

from __future__ import annotations

import sys
from collections import Counter

from ferjax.runtime.errors import DataFormatError

ON_ERROR = ("raise", "skip")
MAX_SHOWN = 20
SKIP_HINT = (
    "hint: --config.data.on_error=skip drops them and counts them by reason in data_report.json"
)


class BadRowsError(DataFormatError):
    """One or more bad rows under data.on_error=raise. The message is several lines: a summary,
    up to MAX_SHOWN bad rows (each naming file, row and what was expected), and a hint."""


class RowErrors:
    """Collects the bad rows of one source file, or the bad files of a folder (unit="file")."""

    def __init__(self, path: str, on_error: str, unit: str = "row"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path, self.on_error, self.unit = path, on_error, unit
        self.counts: Counter = Counter()
        self.lines: list[str] = []  # the first MAX_SHOWN messages, in the order added
        self.examples: dict[str, str] = {}

    def add(self, where: str, reason: str, detail: str) -> None:
        """Records one bad row. `where` ("row 3 (line 4)", or "" when `detail` already names an
        image file); `reason` is the counted category; `detail` says what was expected."""
        message = f"{self.path}: {where}: {detail}" if where else detail
        self.counts[reason] += 1
        self.examples.setdefault(reason, message)
        if len(self.lines) < MAX_SHOWN:
            self.lines.append(message)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        per_reason = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items()))
        return f"{self.path}: {len(self)} bad {self.unit}(s) ({per_reason})"

    def finish(self, stream=None) -> None:
        """Raises BadRowsError (raise) or reports the skipped rows (skip); no-op when clean."""
        if not self.counts:
            return
        if self.on_error == "raise":
            shown = [f"  {line}" for line in self.lines]
            if len(self) > len(self.lines):
                shown.append(f"  ... and {len(self) - len(self.lines)} more")
            raise BadRowsError("\n".join([self.summary(), *shown, SKIP_HINT]))
        stream = sys.stderr if stream is None else stream
        for reason, count in sorted(self.counts.items()):
            first = self.examples[reason]
            print(f"skipped {count} {self.unit}(s) ({reason}), first: {first}", file=stream)
