"""When the loop logs, syncs and checkpoints, and the line that says which class prior a
prior-correcting loss uses."""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from ferjax.data.sampling import Sampler


@dataclasses.dataclass(frozen=True)
class Intervals:
    """When the loop logs, syncs and checkpoints, by step number (1-based after the step)."""

    steps_per_epoch: int
    log_every: int
    checkpoint_every: int
    checkpoint_minutes: float

    def end_of_epoch(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def sync_point(self, step: int) -> bool:
        """Log points: every process reaches them at the same steps."""
        return step % self.log_every == 0 or self.end_of_epoch(step)

    def save_due(self, step: int, seconds_since_save: float) -> bool:
        """A mid-epoch checkpoint (epoch ends always checkpoint). The time-based one is
        single-process only: processes could disagree on the clock."""
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            return True
        return bool(
            self.checkpoint_minutes
            and jax.process_count() == 1
            and seconds_since_save > 60 * self.checkpoint_minutes
        )


def prior_line(sampler: Sampler, prior, config: ml_collections.ConfigDict) -> str:
    """The log line that says which class prior (the step's, StepSpec.prior) a
    prior-correcting loss or adjustment uses."""
    what = (
        "the training labels"
        if sampler.method == "none"
        else (f"the training records after sampling.method={sampler.method}")
    )
    shown = " ".join(f"{n}={p:.3f}" for n, p in zip(sampler.class_names, prior, strict=True))
    return f"class prior for loss.name={config.loss.name} ({what}): {shown}"
