"""The rollout next to a bare rolling reboot, on one lab (issue 12 item 1): full size only.

``make bench`` (CORRAL_BENCH_SIZE=full) brings up the lab tier's lab (tests/lab/conftest.py: ``citest``, or
CORRAL_TEST_LAB_NAME; 3 nodes, torn down at the end), deploys ``corral.cloud.site`` on it once (the story's
``deployed`` fixture), then, back to back and each under the availability probe's load:

1. the bare rolling reboot an operator would do by hand: ``ceph osd set noout`` once, then per node
   ``systemctl reboot`` over SSH, wait until SSH answers with a new boot id, wait until every PG is
   active+clean;
2. the product's rollout of every foundation service (``corral.cloud.rolling_update`` to v2), which must keep
   the probe at zero failures.

Printed: both totals, each node's phases, the per-node orchestration overhead (the rollout's time for a node
beyond the bare reboot-to-active+clean) and the ratio. Times are figures, never assertions. The smoke size is
not here: one node's bare reboot next to the rollout is a chapter of the lab tier's story
(tests/lab/test_site_rolling.py), which deploys nothing more for it; a lab in ``make test``'s bench tier would
deploy the site a second time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from pytest_benchmark.fixture import BenchmarkFixture

from tests.lab import conftest as lab_tier
from tests.lab import test_site_rolling as site_rolling
from tests.lab.test_rolling_engine import NODES, V2, Controller
from tests.support.figures import Figures
from tests.support.rollout_overhead import BareReboot, NodeRollout, bare_rolling_reboot, report, rollout_nodes

FULL = os.environ.get("CORRAL_BENCH_SIZE") == "full"

# The lab tier's fixtures, reused as they are: its session lab, the story's deployment, the rolling chapter's
# controller (trust, the signed v1 -> v2 bundles, the cluster's own ZooKeeper for the lock).
lab = lab_tier.lab
deployed = lab_tier.deployed
site = site_rolling.site


def _bare(ctl: Controller, work: Path) -> tuple[list[BareReboot], float]:
    site_rolling._wait_until_every_pg_is_active_and_clean(ctl)
    probe = site_rolling.start_probe(ctl, work, "bench-bare")
    site_rolling._wait_until_every_pg_is_active_and_clean(ctl)
    started = time.monotonic()
    try:
        bare = bare_rolling_reboot(ctl.session, NODES, list(NODES))
    finally:
        elapsed = time.monotonic() - started
        _, _, probe_report = probe.stop()
    for node in bare:  # printed now too: a rollout that fails later still leaves the baseline on record
        print(f"bare reboot of {node.node}: up {node.up_s:.1f} s, then active+clean {node.clean_s:.1f} s")
    for name, stats in probe_report["services"].items():
        print(f"bare rolling reboot, {name}: {stats['failures']} failures, gap {stats['longest_gap_s']} s")
    return bare, elapsed


def _rollout(ctl: Controller, work: Path) -> tuple[list[NodeRollout], float]:
    site_rolling._wait_until_every_pg_is_active_and_clean(ctl)
    probe = site_rolling.start_probe(ctl, work, "bench-rollout")
    site_rolling._wait_until_every_pg_is_active_and_clean(ctl)
    started = time.monotonic()
    run = site_rolling._roll(ctl, {"corral_bundle": str(ctl.good.bundle), "corral_rollout_id": "bench"})
    elapsed = time.monotonic() - started
    code, output, probe_report = probe.stop()
    (work / "rollout.out").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, site_rolling._out(run)
    assert ctl.releases() == dict.fromkeys(NODES, V2)
    for name, stats in probe_report["services"].items():
        print(f"rollout, {name}: {stats['failures']} failures, gap {stats['longest_gap_s']} s")
        assert stats["failures"] == 0, (name, stats)
    assert code == 0, output[-3000:]
    return rollout_nodes(run.stdout), elapsed


if FULL:  # the smoke size is the lab tier's chapter: nothing of this module runs in make test's bench tier

    def test_bench_rollout_next_to_a_bare_rolling_reboot(
        benchmark: BenchmarkFixture, site: Controller, figures: Figures, tmp_path: Path
    ) -> None:
        bare, bare_total = _bare(site, tmp_path)
        pedantic = cast(Callable[..., tuple[list[NodeRollout], float]], benchmark.pedantic)
        rolled, rollout_total = pedantic(_rollout, args=(site, tmp_path), rounds=1, iterations=1)
        assert sorted(n.node for n in rolled) == sorted(NODES)
        print(report(bare, rolled, bare_total, rollout_total))
        bare_node = statistics.mean(b.total_s for b in bare)
        rolled_node = statistics.mean(n.total_s for n in rolled)
        figures.record("rollout per node", rolled_node, "s", baseline=("bare reboot", bare_node))
        figures.record("orchestration overhead per node", rolled_node - bare_node, "s")
        figures.record("rollout total", rollout_total, "s", baseline=("bare rolling reboot", bare_total))
