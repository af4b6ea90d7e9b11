"""A connected client of the cluster's ZooKeeper ensemble, with a message an operator can act on when it
cannot be reached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from updater.services.cluster.lock import LockHolder
from updater.services.rollouts.release import RolloutRunnerError


# --- ZooKeeper ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def zookeeper(hosts: str, timeout: float = 10.0) -> Iterator[KazooClient]:
    if not hosts:
        raise RolloutRunnerError("no ZooKeeper hosts given (host:port,host:port)")
    client = KazooClient(hosts=hosts, timeout=timeout)
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError:
        client.close()
        raise RolloutRunnerError(
            f"cannot reach the cluster's ZooKeeper ensemble at {hosts} within {timeout:g} s: is it running "
            "(corral.cloud.zookeeper health)?"
        ) from None
    try:
        yield client
    finally:
        client.stop()
        client.close()


def lock_holder_dict(holder: LockHolder | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "rollout_id": holder.rollout_id,
        "token": holder.token,
        "owner": holder.owner,
        "acquired_at": holder.acquired_at,
    }
