"""Orbax checkpoints in the workdir: `checkpoints/latest` (the newest steps, for resume) and
`checkpoints/best` (the best validation metric so far, for the final report).

Each checkpoint holds the train state (parameters, BatchNorm statistics, optimizer state, step)
and a JSON `meta` item (epoch, best metric, config). Saving is asynchronous; a checkpoint
directory only becomes visible once complete, and a latest checkpoint that fails to restore
is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import os
import sys

import jax
import orbax.checkpoint as ocp

from ferjax.errors import CheckpointError


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    def __init__(self, workdir: str, keep_latest: int = 2, async_save: bool = True):
        root = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = lambda keep: ocp.CheckpointManagerOptions(  # noqa: E731
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.latest = ocp.CheckpointManager(
            os.path.join(root, "latest"), options=options(keep_latest)
        )
        self.best = ocp.CheckpointManager(os.path.join(root, "best"), options=options(1))

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
