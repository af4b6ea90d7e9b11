"""The rollout's overhead over a bare rolling reboot (issue 12 item 1), measured on one lab.

The bare rolling reboot is what an operator would do by hand with no care for the clients: ``ceph osd
set noout`` once, then per node ``systemctl reboot`` over SSH, wait until SSH answers with a new boot id, wait
until every PG is active+clean; ``ceph osd unset noout`` at the end. Its per-node time is the node's own
reboot-to-active+clean. The product's rollout reports its per-node phases in ``ROLLING_TIMING`` lines; the
orchestration overhead of a node is its rollout time beyond the bare reboot-to-active+clean.

Figures only: nothing here asserts a time (the machine is shared; the lab tier and `make bench` print them).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.lab.conftest import LabSession
from updater.lab.errors import LabError

PHASES = ("drain", "reboot", "wait", "health", "undrain")
TIMING = re.compile(r"ROLLING_TIMING node=(\S+) resumed_at=\S+((?: \w+=[\d.]+)+)")


@dataclass
class BareReboot:
    node: str
    up_s: float  # `systemctl reboot` until SSH answers with a new boot id
    clean_s: float  # then until every PG is active+clean

    @property
    def total_s(self) -> float:
        return self.up_s + self.clean_s


@dataclass
class NodeRollout:
    node: str
    phases: dict[str, float]

    @property
    def total_s(self) -> float:
        return self.phases["total"]


def _ceph_json(session: LabSession, via: str, command: str) -> Any:
    return json.loads(session.ssh(via, f"ceph {command} --format json"))


def _whole(session: LabSession, via: str) -> bool:
    """Every OSD up (the monitors' osdmap) and every PG active+clean. The PG states come from the manager's
    digest, a few seconds old; with the OSDs up as well, a digest from before the reboot cannot pass."""
    status = _ceph_json(session, via, "status")
    osdmap, pgmap = status["osdmap"], status["pgmap"]
    clean = sum(s["count"] for s in pgmap.get("pgs_by_state", []) if s["state_name"] == "active+clean")
    return bool(osdmap["num_up_osds"] == osdmap["num_osds"] and clean == pgmap["num_pgs"])


def wait_active_clean(session: LabSession, via: str, timeout: float = 300, poll: float = 0.5) -> float:
    """Seconds until every OSD is up and every PG active+clean, asked on ``via`` every ``poll`` seconds."""
    started = time.monotonic()
    while not _whole(session, via):
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"PGs not active+clean within {timeout} s: {_ceph_json(session, via, 'pg stat')}"
            )
        time.sleep(poll)
    return time.monotonic() - started


def bare_rolling_reboot(
    session: LabSession, cluster: Sequence[str], nodes: Sequence[str]
) -> list[BareReboot]:
    """noout once, then each of ``nodes`` rebooted bare, in order (Ceph asked on another node of ``cluster``);
    noout unset whatever happens."""
    others = {node: next(n for n in cluster if n != node) for node in nodes}
    via = others[nodes[0]]
    session.ssh(via, "ceph osd set noout")
    results = []
    try:
        for node in nodes:
            up = session.reboot_inside(node)
            clean = wait_active_clean(session, others[node])
            results.append(BareReboot(node, up, clean))
    finally:
        _unset_noout(session, via)
    return results


def _unset_noout(session: LabSession, via: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            session.ssh(via, "ceph osd unset noout")
            return
        except LabError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def rollout_nodes(stdout: str) -> list[NodeRollout]:
    """The per-node phases of a rollout, from its ``ROLLING_TIMING`` lines, in the order the nodes ran."""
    nodes = []
    for match in TIMING.finditer(stdout):
        fields = dict(pair.split("=") for pair in match.group(2).split())
        nodes.append(NodeRollout(match.group(1), {k: float(v) for k, v in fields.items()}))
    return nodes


def report(
    bare: list[BareReboot], rolled: list[NodeRollout], bare_total_s: float, rollout_total_s: float
) -> str:
    """Printed lines: both totals, each node's phases, the overhead per node and the ratio."""
    bare_node = statistics.mean(b.total_s for b in bare)
    rolled_node = statistics.mean(n.total_s for n in rolled)
    lines = [
        f"bare rolling reboot: {len(bare)} node(s) in {bare_total_s:.1f} s",
        *(
            f"  {b.node}: up {b.up_s:.1f} s + active+clean {b.clean_s:.1f} s = {b.total_s:.1f} s"
            for b in bare
        ),
        f"rollout: {len(rolled)} node(s) in {rollout_total_s:.1f} s",
        *(
            f"  {n.node}: "
            + " ".join(f"{p} {n.phases.get(p, 0.0):.1f}" for p in PHASES)
            + f" = {n.total_s:.1f} s (overhead {n.total_s - bare_node:+.1f} s)"
            for n in rolled
        ),
        f"per node: rollout {rolled_node:.1f} s, bare reboot-to-active+clean {bare_node:.1f} s, "
        f"orchestration overhead {rolled_node - bare_node:.1f} s, ratio {rolled_node / bare_node:.2f}",
    ]
    return "\n".join(lines)
