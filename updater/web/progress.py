"""A rollout's progress as the Rollout page shows it: nodes done, percent, elapsed, an ETA (plain Python)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from updater.domain.states import BROKEN_STATES, FINAL_ROLLOUT_STATES
from updater.store.models import Rollout


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    elapsed_seconds: float | None
    eta_seconds: float | None  # None: unknown (nothing finished yet) or the rollout has ended

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    def as_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "elapsed_seconds": self.elapsed_seconds,
            "eta_seconds": self.eta_seconds,
        }


def rollout_progress(rollout: Rollout, now: datetime | None = None) -> Progress:
    """Done nodes are those finished and not broken; the ETA is the mean of their durations per node left."""
    now = now or datetime.now(UTC)
    finished = [s for s in rollout.steps if s.finished_at is not None and s.state not in BROKEN_STATES]
    total = len(rollout.steps)
    elapsed = None
    if rollout.started_at is not None:
        end = rollout.finished_at or now
        elapsed = max(0.0, (end - rollout.started_at).total_seconds())
    eta = None
    durations = [s.duration_seconds for s in finished if s.duration_seconds is not None]
    if durations and rollout.state not in FINAL_ROLLOUT_STATES:
        eta = sum(durations) / len(durations) * (total - len(finished))
    return Progress(len(finished), total, elapsed, eta)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"  # an en dash: unknown
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
