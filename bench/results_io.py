"""Where the benchmarks write their JSON: <out>/<name>-<UTC time>.json."""

from __future__ import annotations

import json
from pathlib import Path


def save(results: dict, out: str, name: str, time: str | None = None) -> Path:
    """Writes `results` as <out>/<name>-<time>.json (time: results["time"], ISO UTC) and says so."""
    stamp = (time or results["time"]).replace(":", "").replace("+0000", "").replace("+00:00", "")
    path = Path(out) / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
    return path
