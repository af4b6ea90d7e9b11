"""The cluster as last observed, for the Overview: each node's release, whether it answers, its role health.

Observing is an Ansible play over every node (:func:`updater.services.cluster.access.observe`, seconds), far
too slow for a page view and a status API that 50 clients poll. So the play runs in the worker — on a beat
schedule (``cluster_observe_interval_seconds``), at the end of every rollout run — and whenever a plan preview
runs it anyway; each run is saved here with its time, and the Overview shows the saved one with its age. The
page never claims more than was seen: a node missing from the saved observation is "unknown".
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from updater.config import ServiceConfig
from updater.services.cluster.access import Observation, load_cluster, observe

OBSERVATION_FILE = "cluster-observation.json"


class ObservationUnreadable(ValueError):
    """The saved observation exists but cannot be read (the Overview lists it as a problem)."""


@dataclass(frozen=True)
class NodeHealth:
    state: str  # healthy | unhealthy | unreachable | unknown
    release: str | None
    detail: str = ""


@dataclass(frozen=True)
class SavedObservation:
    observed_at: datetime
    releases: dict[str, str]
    unreachable: dict[str, str] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    timed_out: bool = False

    def node(self, name: str) -> NodeHealth:
        release = self.releases.get(name)
        if name in self.unreachable:
            return NodeHealth("unreachable", release, self.unreachable[name])
        if name in self.unhealthy:
            return NodeHealth("unhealthy", release, self.unhealthy[name])
        if release is not None:
            return NodeHealth("healthy", release)
        return NodeHealth("unknown", None, "not in the last observation")

    def summary(self, nodes: list[str]) -> str:
        """One line for the whole cluster, over ``nodes`` (the inventory's)."""
        states = [self.node(name).state for name in nodes]
        if not nodes:
            return "no nodes"
        bad = [name for name, state in zip(nodes, states, strict=True) if state != "healthy"]
        if not bad:
            return f"healthy: all {len(nodes)} nodes answer and every role's health check passes"
        return f"{len(bad)} of {len(nodes)} nodes need attention: " + ", ".join(
            f"{name} {self.node(name).state}" for name in bad
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "observed_at": self.observed_at.isoformat(timespec="seconds"),
            "releases": self.releases,
            "unreachable": self.unreachable,
            "unhealthy": self.unhealthy,
            "timed_out": self.timed_out,
        }


def _path(config: ServiceConfig) -> Path:
    return Path(config.home) / OBSERVATION_FILE


def save(config: ServiceConfig, observation: Observation, *, now: datetime | None = None) -> SavedObservation:
    """Keep ``observation`` as the latest (the file is replaced atomically: readers see old or new)."""
    saved = SavedObservation(
        now or datetime.now(UTC),
        dict(observation.releases),
        dict(observation.unreachable),
        dict(observation.unhealthy),
        observation.timed_out,
    )
    target = _path(config)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".observation-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(saved.as_json(), handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return saved


def load(config: ServiceConfig) -> SavedObservation | None:
    """The latest saved observation; None before the first one."""
    try:
        data = json.loads(_path(config).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ObservationUnreadable(f"{_path(config)} cannot be read: {error}") from None
    try:
        return SavedObservation(
            datetime.fromisoformat(str(data["observed_at"])),
            {str(k): str(v) for k, v in data["releases"].items()},
            {str(k): str(v) for k, v in data.get("unreachable", {}).items()},
            {str(k): str(v) for k, v in data.get("unhealthy", {}).items()},
            bool(data.get("timed_out", False)),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ObservationUnreadable(f"{_path(config)} is not an observation: {error}") from None


def refresh(config: ServiceConfig) -> SavedObservation:
    """Observe every node now (the play the preflight runs) and keep the result."""
    return save(config, observe(load_cluster(config), home=config.home))
