"""The rollout task: walks the plan with ansible-runner; resumes an interrupted rollout from saved state.

Thin adapters: each task only calls service functions (:mod:`updater.tasks.app` has the app and its rules).

- ``corral.rollout`` (one positional argument, the rollout id) runs
  :func:`updater.services.rollouts.execution.run`.
- ``corral.recover_rollouts`` enqueues every rollout the store shows running whose process is gone
  (:func:`updater.services.rollouts.execution.recover`); it is sent when a worker is ready and scheduled by
  beat every :data:`RECOVERY_INTERVAL_SECONDS`. Recovery comes from persisted state (the store and
  ZooKeeper), never from Celery redelivery.
- ``corral.observe_cluster`` observes every node for the Overview
  (:func:`updater.services.cluster.view.refresh`); scheduled by beat every
  ``cluster_observe_interval_seconds``, sent when a worker is ready and after every rollout run, so the
  Overview shows the nodes' release and health from the start and as soon as a rollout ends.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.services.cluster import view as cluster_view
from updater.services.cluster.access import ClusterAccessError
from updater.services.jobs import TASK_OBSERVE_CLUSTER, TASK_RECOVER_ROLLOUTS, TASK_ROLLOUT, JobQueue
from updater.services.rollouts import execution as rollout_execution

RECOVERY_ENTRY = "recover-rollouts"
RECOVERY_INTERVAL_SECONDS = 60
OBSERVE_ENTRY = "observe-cluster"


def register(app: Celery, config: ServiceConfig, sessions: Callable[[], sessionmaker[Session]]) -> None:
    """Register this module's tasks on ``app``; ``sessions()`` gives the worker's session factory."""

    queue = JobQueue(config, celery=app)  # the one way to queue, through the worker's own app

    def enqueue(rollout_id: str) -> None:
        queue.send(TASK_ROLLOUT, [rollout_id])

    def send_recovery() -> None:
        queue.send(TASK_RECOVER_ROLLOUTS)

    def send_observe() -> None:
        queue.send(TASK_OBSERVE_CLUSTER)

    def rollout(rollout_id: str) -> str:
        try:
            return rollout_execution.run(config, sessions(), rollout_id)
        finally:
            send_observe()  # whatever the outcome: the Overview shows the nodes now

    def recover_rollouts() -> list[str]:
        return rollout_execution.recover(config, sessions(), enqueue)

    def observe_cluster() -> dict[str, Any]:
        try:
            seen = cluster_view.refresh(config)
        except ClusterAccessError as error:  # no inventory yet, or one Ansible cannot read
            return {"observed": False, "message": str(error)}
        return {"observed": True, "observed_at": seen.observed_at.isoformat(timespec="seconds")}

    app.task(name=TASK_ROLLOUT)(rollout)
    app.task(name=TASK_RECOVER_ROLLOUTS)(recover_rollouts)
    app.task(name=TASK_OBSERVE_CLUSTER)(observe_cluster)
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        RECOVERY_ENTRY: {
            "task": TASK_RECOVER_ROLLOUTS,
            "schedule": timedelta(seconds=RECOVERY_INTERVAL_SECONDS),
            "options": {"expires": float(RECOVERY_INTERVAL_SECONDS)},
        },
        OBSERVE_ENTRY: {
            "task": TASK_OBSERVE_CLUSTER,
            "schedule": timedelta(seconds=config.cluster_observe_interval_seconds),
            "options": {"expires": float(config.cluster_observe_interval_seconds)},
        },
    }

    def on_worker_ready(sender: Any = None, **_kwargs: Any) -> None:
        if getattr(sender, "app", None) is app:
            send_recovery()
            send_observe()  # the Overview has the nodes at once, not after one interval

    worker_ready.connect(on_worker_ready, weak=False, dispatch_uid=f"corral-recover-{id(app)}")
