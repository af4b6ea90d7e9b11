# Copyright: Corral maintainers
# Apache-2.0
"""Structured views of ZooKeeper 3.8's AdminServer (``/commands/<name>`` JSON) and the quorum rules.

Pure functions: the ``zookeeper_status`` module fetches ``monitor``, ``stat`` and ``voting_view`` from the
AdminServer bound to 127.0.0.1, these turn the responses into facts; ``removal_keeps_quorum`` is the rule
the role's drain applies.
"""

from __future__ import annotations

import json
from typing import Any

NOT_SERVING = "not serving"


class ZooKeeperOutputError(ValueError):
    """An AdminServer response is not what ZooKeeper 3.8 documents."""


def _load(body: str, command: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ZooKeeperOutputError(f"/commands/{command} did not return JSON: {body[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ZooKeeperOutputError(f"/commands/{command} returned {type(data).__name__}, not an object")
    return data


def summarize(responses: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """Responses by command name → (HTTP status, body) → the member's state.

    ``stat`` decides whether the member serves: a member without quorum answers it with
    ``"error": "This ZooKeeper instance is not currently serving requests"`` (and ``monitor`` with HTTP 500).
    """
    if "stat" not in responses:
        raise ZooKeeperOutputError("the stat command's response is required")
    stat_status, stat_body = responses["stat"]
    if stat_status != 200:
        raise ZooKeeperOutputError(f"/commands/stat answered HTTP {stat_status}")
    stat = _load(stat_body, "stat")
    error = stat.get("error")
    if error:
        return {
            "serving": False,
            "mode": NOT_SERVING,
            "error": str(error),
            "voting_members": [],
            "quorum_size": None,
            "synced_followers": None,
            "zxid": None,
            "version": None,
        }
    server = stat.get("server_stats") or {}
    mode = str(server.get("server_state") or "unknown")
    monitor: dict[str, Any] = {}
    if responses.get("monitor", (0, ""))[0] == 200:
        monitor = _load(responses["monitor"][1], "monitor")
    voting: list[str] = []
    if responses.get("voting_view", (0, ""))[0] == 200:
        view = _load(responses["voting_view"][1], "voting_view")
        config = view.get("current_config") or {}
        voting = sorted(
            (
                sid
                for sid, member in config.items()
                if member.get("learner_type", "participant") == "participant"
            ),
            key=int,
        )
    quorum_size = monitor.get("quorum_size")
    return {
        "serving": True,
        "mode": mode,
        "error": None,
        "voting_members": voting,
        "quorum_size": int(quorum_size) if quorum_size is not None else (len(voting) or None),
        "synced_followers": monitor.get("synced_followers") if mode == "leader" else None,
        "zxid": server.get("last_processed_zxid"),
        "version": stat.get("version"),
    }


def majority(voting_members: int) -> int:
    return voting_members // 2 + 1


def removal_keeps_quorum(voting_members: int, serving_members: list[str], leaving: str) -> dict[str, Any]:
    """Whether the ensemble keeps a quorum once ``leaving`` stops.

    ``serving_members`` are the members found serving right now (``leaving`` among them or not).
    """
    if voting_members < 1:
        raise ValueError("an ensemble has at least one voting member")
    remaining = sorted(set(serving_members) - {leaving})
    needed = majority(voting_members)
    ok = len(remaining) >= needed
    message = (
        f"{len(remaining)} of {voting_members} members keep serving without {leaving}; "
        f"a quorum needs {needed}"
    )
    return {"ok": ok, "remaining": remaining, "needed": needed, "message": message}
