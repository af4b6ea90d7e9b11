# Copyright: Corral maintainers
# Apache-2.0
"""Structured views of the Ceph CLI's JSON (Ceph 16.2 Pacific), shared by the ceph_* modules.

Pure functions: the modules run the commands, these turn what the commands printed (and their exit status)
into the dictionaries roles and the rolling engine use. Nobody parses Ceph's text in a shell task.
"""

from __future__ import annotations

import json
import re
from typing import Any

EBUSY = 16  # what `ceph osd|mon ok-to-stop` exits with when stopping is unsafe
ACTIVE_CLEAN = "active+clean"
_QUORUM_RE = re.compile(r"\(([^)]*)\)")


class CephOutputError(ValueError):
    """A Ceph command failed, or printed something that is not what its documented format says."""


def load_json(stdout: str, what: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise CephOutputError(f"`{what}` did not print JSON ({exc}): {stdout[:200]!r}") from exc


def parse_health(health: dict[str, Any]) -> dict[str, Any]:
    """The ``health`` object of ``ceph status`` or the whole ``ceph health detail`` output.

    Returns ``status`` and ``checks``: one entry per health-check code with severity, summary message,
    count, detail lines (only ``health detail`` has them) and whether the check is muted.
    """
    try:
        status = str(health["status"])
        raw_checks = health.get("checks") or {}
    except (KeyError, TypeError, AttributeError) as exc:
        raise CephOutputError(f"health object has no status: {health!r}"[:300]) from exc
    checks = {}
    for code, check in sorted(raw_checks.items()):
        summary = check.get("summary") or {}
        checks[code] = {
            "severity": check.get("severity"),
            "message": summary.get("message", ""),
            "count": summary.get("count"),
            "detail": [d.get("message", "") for d in check.get("detail") or []],
            "muted": bool(check.get("muted", False)),
        }
    return {"status": status, "checks": checks, "codes": sorted(checks)}


def summarize_status(status: dict[str, Any]) -> dict[str, Any]:
    """``ceph status --format json`` → health, monitors, OSDs, PGs and manager, as plain facts."""
    try:
        monmap = status["monmap"]
        osdmap = status["osdmap"]
        pgmap = status["pgmap"]
        health = parse_health(status["health"])
    except (KeyError, TypeError) as exc:
        raise CephOutputError(f"`ceph status` output lacks {exc}") from exc
    quorum_names = list(status.get("quorum_names") or [])
    num_mons = int(monmap.get("num_mons", len(monmap.get("mons", []))))
    by_state = {str(s["state_name"]): int(s["count"]) for s in pgmap.get("pgs_by_state") or []}
    num_pgs = int(pgmap.get("num_pgs", sum(by_state.values())))
    active_clean = by_state.get(ACTIVE_CLEAN, 0)
    inactive = sum(count for state, count in by_state.items() if "active" not in state.split("+"))
    num_osds = int(osdmap.get("num_osds", 0))
    up = int(osdmap.get("num_up_osds", 0))
    in_ = int(osdmap.get("num_in_osds", 0))
    mgrmap = status.get("mgrmap") or {}
    return {
        "fsid": status.get("fsid"),
        "health": health,
        "mons": {
            "num": num_mons,
            "quorum": quorum_names,
            "in_quorum": len(quorum_names),
            "all_in_quorum": num_mons > 0 and len(quorum_names) == num_mons,
            "quorum_age": status.get("quorum_age"),
        },
        "osds": {
            "num": num_osds,
            "up": up,
            "in": in_,
            "all_up_in": up == num_osds and in_ == num_osds,
            "remapped_pgs": int(osdmap.get("num_remapped_pgs", 0)),
        },
        "pgs": {
            "num": num_pgs,
            "by_state": by_state,
            "active_clean": active_clean,
            "all_active_clean": active_clean == num_pgs,
            "inactive": inactive,
            "num_pools": int(pgmap.get("num_pools", 0)),
        },
        "mgr": {
            "available": bool(mgrmap.get("available", False)),
            "num_standbys": int(mgrmap.get("num_standbys", 0)),
        },
    }


def health_verdict(health: dict[str, Any], accepted: list[str]) -> dict[str, Any]:
    """Healthy means HEALTH_OK, or every raised check is an accepted *warning*.

    Muted checks do not count (muting is the operator's explicit, expiring decision in Ceph itself). An
    error-severity check is never excused by the accepted list.
    """
    raised = [code for code, check in health["checks"].items() if not check["muted"]]
    unaccepted = [
        code for code in raised if code not in accepted or health["checks"][code]["severity"] == "HEALTH_ERR"
    ]
    return {
        "healthy": not unaccepted,
        "unaccepted": unaccepted,
        "accepted": [code for code in raised if code not in unaccepted],
    }


def describe_unhealthy(health: dict[str, Any], unaccepted: list[str]) -> str:
    parts = [f"{code}: {health['checks'][code]['message']}" for code in unaccepted]
    return f"{health['status']} ({'; '.join(parts) or 'no check codes reported'})"


def parse_osd_ok_to_stop(rc: int, stdout: str, stderr: str, osds: list[int]) -> dict[str, Any]:
    """``ceph osd ok-to-stop IDS --format json``: exit 0 = safe, 16 (EBUSY) = unsafe, else an error."""
    if rc not in (0, EBUSY):
        raise CephOutputError(
            f"`ceph osd ok-to-stop {' '.join(map(str, osds))}` failed (rc={rc}): {stderr.strip()}"
        )
    data = load_json(stdout, "ceph osd ok-to-stop") if stdout.strip() else {}
    ok = bool(data.get("ok_to_stop", rc == 0)) and rc == 0
    return {
        "ok_to_stop": ok,
        "osds": list(data.get("osds", osds)),
        "num_ok_pgs": int(data.get("num_ok_pgs", 0)),
        "num_not_ok_pgs": int(data.get("num_not_ok_pgs", 0)),
        "pgs_would_become_inactive": list(data.get("bad_become_inactive", [])),
        "pgs_would_become_degraded": list(data.get("ok_become_degraded", [])),
        "message": stderr.strip() or ("safe to stop" if ok else "unsafe to stop"),
    }


def parse_mon_ok_to_stop(rc: int, stdout: str, stderr: str, mons: list[str]) -> dict[str, Any]:
    """``ceph mon ok-to-stop IDS``: prints a sentence on stderr; exit 0 = safe, 16 (EBUSY) = unsafe."""
    if rc not in (0, EBUSY):
        raise CephOutputError(f"`ceph mon ok-to-stop {' '.join(mons)}` failed (rc={rc}): {stderr.strip()}")
    message = (stderr.strip() or stdout.strip()).removeprefix("Error EBUSY: ")
    match = _QUORUM_RE.search(message)
    remaining = [m for m in match.group(1).split(",") if m] if match else []
    return {"ok_to_stop": rc == 0, "mons": list(mons), "remaining_quorum": remaining, "message": message}


def parse_osd_ids(stdout: str, what: str) -> list[int]:
    """``ceph osd ls-tree NAME --format json`` (a JSON list of OSD ids)."""
    data = load_json(stdout, what)
    if not isinstance(data, list) or not all(isinstance(i, int) for i in data):
        raise CephOutputError(f"`{what}` printed {data!r}, not a list of OSD ids")
    return sorted(data)


# Ceph majors by release name: `ceph osd require-osd-release` takes the name.
RELEASE_NAMES = {15: "octopus", 16: "pacific", 17: "quincy", 18: "reef", 19: "squid", 20: "tentacle"}
_VERSION_RE = re.compile(r"ceph version (\d+)\.\d+\.\d+\S* \([0-9a-f]+\) ([a-z]+) \(")


def osd_release_step(versions: dict[str, Any], required: str) -> dict[str, Any]:
    """What ``require-osd-release`` should be once every node runs the new release.

    ``versions`` is ``ceph versions --format json``, ``required`` the ``require_osd_release`` of ``ceph osd
    dump --format json``. Returns ``running`` (the OSDs' release name), ``required`` and ``set_to`` (the name
    to set, or None when it is already right). Raises :class:`CephOutputError` when the OSDs run several
    majors (a node is not done yet) or an older major than the cluster requires (cannot happen in a healthy
    cluster), each with what to look at.
    """
    osd_versions = versions.get("osd") if isinstance(versions, dict) else None
    if not isinstance(osd_versions, dict) or not osd_versions:
        raise CephOutputError(f"`ceph versions` names no OSD daemon: {versions!r}"[:300])
    majors: dict[int, str] = {}
    for text in osd_versions:
        match = _VERSION_RE.match(text)
        if not match:
            raise CephOutputError(f"cannot read a Ceph version from {text!r}")
        majors[int(match.group(1))] = match.group(2)
    if len(majors) > 1:
        running = ", ".join(f"{count} on {text}" for text, count in sorted(osd_versions.items()))
        raise CephOutputError(
            f"the OSDs run several Ceph releases ({running}): require-osd-release is raised only once "
            "every OSD runs the new one; finish the rollout (or restart the OSDs still on the old binary) "
            "first"
        )
    major, name = next(iter(majors.items()))  # exactly one: several were refused above
    known = {release: number for number, release in RELEASE_NAMES.items()}
    if required not in known:
        raise CephOutputError(
            f"`ceph osd dump` says require_osd_release {required!r}, a release not known here"
        )
    if major < known[required]:
        raise CephOutputError(
            f"the OSDs run {name} ({major}) but the cluster requires {required}: an OSD older than the "
            "cluster's minimum should not be up; check `ceph versions`"
        )
    return {"running": name, "required": required, "set_to": name if major > known[required] else None}
