"""Orbax checkpoints in the workdir: `checkpoints/latest` (the newest steps, for resume) and
`checkpoints/best` (the best validation metric so far, for the final report).

Each checkpoint holds the train state (parameters, BatchNorm statistics, optimizer state, step)
and a JSON `meta` item (epoch, best metric, config). Saving is asynchronous; a checkpoint
directory only becomes visible once complete, and a latest checkpoint that fails to restore
is skipped with a warning in favour of the previous one.

Multi-process runs: Orbax names the barriers of an asynchronous save after the step folder
(`async_write_complete.<step>`). The latest and the best manager often save the same step (the
end of an epoch that improved the metric), so each manager gets its own barrier prefix;
without it the two saves share barrier names, which the coordination service refuses
("Barrier ... is already ongoing") and the processes hang until the barrier times out.
"""

from __future__ import annotations

import json
import sys

import jax
import ml_collections
import orbax.checkpoint as ocp

from ferjax.runtime.errors import CheckpointError
from ferjax.runtime.workdir import BEST, LATEST, Workdir


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# Longest wait at a checkpoint barrier for the other processes (a dead process is noticed much
# sooner by ferjax.runtime.distributed's watchdog).
BARRIER_TIMEOUT_SECONDS = 600


def _manager(directory: str, keep: int, async_save: bool, name: str) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=async_save,
        async_options=ocp.options.AsyncOptions(timeout_secs=BARRIER_TIMEOUT_SECONDS),
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
    )
    return ocp.CheckpointManager(directory, options=options)


class Checkpoints:
    def __init__(self, workdir: Workdir, keep_latest: int = 2, async_save: bool = True):
        self.latest = _manager(workdir.checkpoint_dir(LATEST), keep_latest, async_save, LATEST)
        self.best = _manager(workdir.checkpoint_dir(BEST), 1, async_save, BEST)

    @staticmethod
    def _save(manager, step: int, state, meta: dict) -> None:
        if step in manager.all_steps():
            return
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )

    def save_latest(self, step: int, state, meta: dict) -> None:
        self._save(self.latest, step, state, meta)

    def save_best(self, step: int, state, meta: dict) -> None:
        self._save(self.best, step, state, meta)

    @staticmethod
    def _restore(manager, step, target):
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"])

    def restore_latest(self, target):
        """(state, meta) of the newest checkpoint that restores, or (None, None)."""
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                return self._restore(self.latest, step, target)
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(
                    f"warning: checkpoint {self.latest.directory}/{step} cannot be restored "
                    f"({first[:200]}); trying an older one",
                    file=sys.stderr,
                )
        return None, None

    def restore_best(self, target):
        step = self.best.latest_step()
        if step is None:
            raise CheckpointError(f"{self.best.directory}: no best checkpoint")
        return self._restore(self.best, step, target)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


# ------------------------------------------------------------------------------- resume

# Config keys that may differ between a run and its resumption: they do not change results.
RUNTIME_KEYS = (
    "train.halt_after_steps",
    "train.allow_config_change",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
    "data.cache_dir",
    "train.peak_flops_per_device",
    "train.verbosity",
    "train.progress_seconds",
    "train.compilation_cache_dir",
)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """Keys whose value differs between a checkpointed run's config and `config` (runtime keys
    and keys the checkpointed run did not have, i.e. added by a newer ferjax, excepted)."""
    now = flatten(json.loads(config.to_json_best_effort()))
    before = flatten(saved)
    differ = sorted(k for k in before if k not in RUNTIME_KEYS and k in now and now[k] != before[k])
    return differ + sorted(k for k in before if k not in now and k not in RUNTIME_KEYS)


def check_config_unchanged(saved: dict | None, config: ml_collections.ConfigDict, where: str):
    """Refuses to resume with a different config (unless train.allow_config_change)."""
    if saved is None or config.train.allow_config_change:
        return
    differ = config_differences(saved, config)
    if differ:
        now, before = flatten(json.loads(config.to_json_best_effort())), flatten(saved)
        shown = ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in differ[:5])
        raise CheckpointError(
            f"{where}: the config differs from the checkpointed run in {shown}; use a new "
            "workdir, or --config.train.allow_config_change=true to resume anyway"
        )
