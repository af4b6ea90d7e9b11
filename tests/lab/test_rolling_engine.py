"""The rolling-update engine on real lab nodes: ``ansible-playbook corral.cloud.rolling_update`` with a real
signed bundle (node image v2 derived from the lab's image), a real ZooKeeper (on the host's loopback) holding
the lock and progress, the lab boot service, real reboots and the lab's real IPMI BMCs.

These run the per-node procedure with ``rolling_node_roles=[]`` (the engine only: lock, plan, progress,
boot-once, reboot, verify, fencing, resume) so they do not need ``corral.cloud.site`` deployed; the
zero-downtime specs with the services and the availability probe build on the same fixtures (docs/update.md).

``CORRAL_ROLLING_LAB=<name>`` runs them against an existing lab of that name (development) instead of the
session's shared lab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from kazoo.client import KazooClient

from tests.lab.conftest import ROOT, VENV_BIN, LabSession, ansible_env, build_collection
from tests.support.zookeeper_server import ZooKeeperServer
from tests.unit import bundle_kit
from updater.lab.boot_service import LabBootService
from updater.lab.lab import Lab
from updater.services.cluster.boot import FENCE_DIR, StaleBootToken
from updater.services.cluster.lock import ClusterLock, LockHolder, StaleToken

V1, V2 = "0.1.0", "0.2.0"
NODES = ("node1", "node2", "node3")
# Waits for the lab (a lab node reboots in ~2 s): keep every test's waits near 90 s, not Ansible's 600 s.
FAST = {
    "rolling_node_roles": [],
    "rolling_node_reboot_timeout": 60,
    "rolling_node_fence_timeout": 60,
    "rolling_node_release_retries": 5,
    "rolling_node_release_delay": 2,
}


@pytest.fixture(scope="module")
def session(request: pytest.FixtureRequest) -> LabSession:
    name = os.environ.get("CORRAL_ROLLING_LAB")
    if not name:
        shared: LabSession = request.getfixturevalue("lab")
        return shared
    lab = Lab(name)
    return LabSession(lab, lab.config().image)


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


class HasHosts(Protocol):
    """A ZooKeeper ensemble: the test's own server on loopback, or the lab cluster's own ensemble."""

    @property
    def hosts(self) -> str: ...


# A service role the test releases' collections carry besides the product's (corral.cloud.service_double):
# listed in rolling_node_roles, its drain and undrain write down on the controller who ran them (the run's
# CORRAL_ROLLOUT_RUN marker) and hold while the test's hold file exists, so a test can act in the middle of a
# drain or an undrain and see afterwards which run changed what. Its directory is $CORRAL_SERVICE_DOUBLE_DIR
# (the per-node plays inherit the controller's environment); unset, the double does nothing.
SERVICE_DOUBLE = "service_double"
SERVICE_DOUBLE_DIR = "CORRAL_SERVICE_DOUBLE_DIR"
_DOUBLE_ACTION = """---
- name: ACTION the service double (written down; held while its hold file exists)
  ansible.builtin.shell: |
    log="$CORRAL_SERVICE_DOUBLE_DIR/log"
    hold="$CORRAL_SERVICE_DOUBLE_DIR/hold-ACTION-{{ inventory_hostname }}"
    echo "ACTION start {{ inventory_hostname }} ${CORRAL_ROLLOUT_RUN:-manual}" >> "$log"
    i=0
    while [ -e "$hold" ] && [ $i -lt 900 ]; do sleep 0.2; i=$((i + 1)); done
    echo "ACTION end {{ inventory_hostname }} ${CORRAL_ROLLOUT_RUN:-manual}" >> "$log"
  delegate_to: localhost
  changed_when: true
  when: lookup('ansible.builtin.env', 'CORRAL_SERVICE_DOUBLE_DIR') | length > 0
"""
SERVICE_DOUBLE_FILES = {
    "tasks/main.yml": "---\n- name: Nothing to deploy\n  ansible.builtin.meta: noop\n",
    "tasks/health.yml": "---\n- name: The service double is healthy\n  ansible.builtin.meta: noop\n",
    "tasks/drain.yml": _DOUBLE_ACTION.replace("ACTION", "drain"),
    "tasks/undrain.yml": _DOUBLE_ACTION.replace("ACTION", "undrain"),
}


def build_collection_with_double(out: Path) -> Path:
    """This tree's collection with :data:`SERVICE_DOUBLE` added, built as a release's tarball into ``out``."""
    source = out / "source"
    with tarfile.open(build_collection(out / "plain")) as tar:
        tar.extractall(source, filter="data")
    for built_only in ("MANIFEST.json", "FILES.json"):  # ansible-galaxy writes them again from galaxy.yml
        (source / built_only).unlink()
    shutil.copy(ROOT / "galaxy.yml", source / "galaxy.yml")
    for name, text in SERVICE_DOUBLE_FILES.items():
        path = source / "roles" / SERVICE_DOUBLE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (tarball,) = out.glob("corral-cloud-*.tar.gz")
    return tarball


def double_log(directory: Path) -> list[tuple[str, str, str, str]]:
    """The service double's log in ``directory``: (action, start|end, node, run marker) per line."""
    try:
        text = (directory / "log").read_text()
    except FileNotFoundError:
        return []
    return [(a, edge, node, marker) for a, edge, node, marker in (line.split() for line in text.splitlines())]


@dataclass
class Release:
    bundle: Path
    image: str


@dataclass
class Controller:
    """What the controller of a rollout has: trust, staging, ZooKeeper, the lab."""

    session: LabSession
    zookeeper: HasHosts
    work: Path
    trust_dir: Path
    good: Release
    bad: Release

    def run(
        self, *extra: str, timeout: float = 600, check_vars: dict[str, object] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*extra, check_vars=check_vars),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=self.env(),
            check=False,
        )

    def command(self, *extra: str, check_vars: dict[str, object] | None = None) -> list[str]:
        variables = {
            **FAST,
            "corral_rolling_zookeeper_hosts": self.zookeeper.hosts,
            "corral_trust_dir": str(self.trust_dir),
            "corral_staging_root": str(self.work / "staging"),
            "corral_releases_root": str(self.work / "releases"),
            **(check_vars or {}),
        }
        return [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(self.session.inventory),
            "corral.cloud.rolling_update",
            "-e",
            json.dumps(variables),
            *extra,
        ]

    def env(self) -> dict[str, str]:
        return {**ansible_env(), "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}

    def lock(self) -> Iterator[ClusterLock]:
        client = KazooClient(hosts=self.zookeeper.hosts, timeout=5.0)
        client.start(timeout=15)
        try:
            yield ClusterLock(client)
        finally:
            client.stop()
            client.close()

    def releases(self) -> dict[str, str]:
        return {node: _version(self.session.release(node)) for node in NODES}

    def boots_since(self, count: int) -> list[tuple[str, str, str]]:
        return [(b.node, b.image, b.kind) for b in self.session.lab.boots()[count:]]

    def reset(self) -> None:
        """Every node back on v1, no lock, no rollout. Each test's ZooKeeper starts its token counter at 1, so
        the boot service's per-node fences (a cluster keeps one ZooKeeper for life) are cleared too."""
        for node in NODES:
            self.session.reset(node)
            shutil.rmtree(self.session.lab.layout.node_dir(node) / FENCE_DIR, ignore_errors=True)
        for lock in self.lock():
            holder = lock.holder()
            if holder is not None:
                lock.break_lock(holder.token)
            lock.client.delete("/corral/update/rollouts", recursive=True)


def _version(release_text: str) -> str:
    match = re.search(r"^CORRAL_VERSION=(.*)$", release_text, re.MULTILINE)
    assert match, release_text
    return match.group(1)


def build_controller(
    session: LabSession, zookeeper: HasHosts, work: Path, nodes: int = 5, *, double: bool = False
) -> Controller:
    """Trust, a license, the release's collection (with :data:`SERVICE_DOUBLE` when ``double``) and two
    signed bundles: v2 (good) and 0.2.1, whose sshd never starts (bad). Changes nothing on the nodes."""
    base = session.lab.images.get(session.base_image)
    assert base.release.version == V1, (
        f"the lab's image is {base.release.version}, these specs roll {V1} to {V2}"
    )
    kit = bundle_kit.make_kit(work / "kit")
    issued = bundle_kit.issue(kit, nodes=nodes)  # the license's node entitlement
    trust = work / "trust"
    trust.mkdir(mode=0o700)
    (trust / "trust-root.json").write_bytes(kit.vendor.trust_root.read_bytes())
    (trust / "keyring.json").write_bytes(kit.vendor.keyring.read_bytes())
    (trust / "license.json").write_bytes(issued.document)
    (trust / "entitlement-key").write_text(issued.key_path.read_text())
    collection = (build_collection_with_double if double else build_collection)(work / "collection")
    releases = {}
    for name, version, files in (
        ("good", V2, {"/etc/motd": "Corral 0.2.0\n"}),
        # An image whose sshd never starts: its trial boot cannot come back.
        ("bad", "0.2.1", {"/usr/sbin/sshd": "#!/bin/sh\nexit 1\n"}),
    ):
        image = session.derive_image(version, files)
        artifacts = bundle_kit.make_artifacts(
            work / name, version, image=session.lab.images.get(image).artifact
        )
        artifacts.collection = collection
        bundle = bundle_kit.build_bundle(kit, version, upgrade_from=">=0.1.0, <0.3.0", artifacts=artifacts)
        releases[name] = Release(bundle, image)
    return Controller(session, zookeeper, work, trust, releases["good"], releases["bad"])


@pytest.fixture(scope="module")
def controller(
    session: LabSession, zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Controller]:
    ctl = build_controller(session, zookeeper, tmp_path_factory.mktemp("rolling"), double=True)
    ctl.reset()
    yield ctl
    ctl.reset()


def _out(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout[-6000:] + run.stderr[-3000:]


def test_a_rollout_takes_every_node_to_v2_in_the_planned_order_booting_each_once(
    controller: Controller,
) -> None:
    before = len(controller.session.lab.boots())
    started = time.monotonic()
    run = controller.run("-e", f"corral_bundle={controller.good.bundle}")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, _out(run)
    assert controller.releases() == dict.fromkeys(NODES, V2)
    done = re.search(r"ROLLING_DONE rollout=(\S+) release=(\S+) executed=([\w,]+)", run.stdout)
    assert done, _out(run)
    plan = re.findall(r"\d+\. (?:quorum|node|resume): (node\d+)", run.stdout)
    assert done.group(3).split(",") == plan == list(NODES)
    # Exactly one boot per node, and it was the one-shot trial of v2.
    assert controller.boots_since(before) == [(node, controller.good.image, "once") for node in plan]
    for node in NODES:
        pointer = controller.session.lab.boot_pointer(node)
        assert (pointer.default, pointer.next) == (controller.good.image, None)
    for lock in controller.lock():
        assert lock.holder() is None
        record = lock.read_rollout(done.group(1))
        assert record is not None
        assert (record.state, record.executed) == ("succeeded", list(NODES))
    timings = re.findall(
        r"ROLLING_TIMING node=(\S+) resumed_at=\S+ drain=(\S+) reboot=(\S+) wait=(\S+) health=(\S+) "
        r"undrain=(\S+) total=([\d.]+)",
        run.stdout,
    )
    print(f"\n[rolling] 3 nodes in {elapsed:.1f}s (engine only, no services)")
    for row in timings:
        print("[rolling] node={} drain={} reboot={} wait={} health={} undrain={} total={}".format(*row))
    assert [row[0] for row in timings] == list(NODES)
    # Run again: every node is on v2, nothing is rebooted.
    again_from = len(controller.session.lab.boots())
    again = controller.run("-e", f"corral_release={V2}", "-e", "corral_rollout_id=update-again")
    assert again.returncode == 0, _out(again)
    assert controller.boots_since(again_from) == []
    controller.reset()


def test_check_mode_prints_the_plan_and_changes_nothing(controller: Controller) -> None:
    before = len(controller.session.lab.boots())
    run = controller.run("-e", f"corral_bundle={controller.good.bundle}", "--check")
    assert run.returncode == 0, _out(run)
    assert "Plan for 0.2.0:" in run.stdout
    assert re.findall(r"\d+\. quorum: (node\d+)", run.stdout) == list(NODES)
    assert controller.boots_since(before) == []
    for lock in controller.lock():
        assert lock.holder() is None


def test_a_bad_image_fails_its_trial_is_power_cycled_back_and_the_rollout_stops(
    controller: Controller,
) -> None:
    before = len(controller.session.lab.boots())
    run = controller.run("-e", f"corral_bundle={controller.bad.bundle}")
    assert run.returncode != 0
    out = run.stdout
    assert "rollout update-to-0.2.1 stopped: node1 failed its trial boot of 0.2.1" in out, _out(run)
    assert "power-cycled through its BMC and runs 0.1.0 again" in out
    assert "-e corral_rollback_node=node1" in out
    assert controller.releases() == dict.fromkeys(NODES, V1)
    boots = controller.boots_since(before)
    # The trial boot (once, bad image), then the power cycle into the default: nothing on the other nodes.
    assert [(node, kind) for node, _, kind in boots] == [("node1", "once"), ("node1", "default")]
    assert boots[1][1] == controller.session.base_image
    for lock in controller.lock():
        record = lock.read_rollout("update-to-0.2.1")
        assert record is not None
        assert record.state == "failed"
        assert record.nodes["node1"].state == "failed"
        holder = lock.holder()
        assert holder is not None
        assert holder.rollout_id == "update-to-0.2.1"
    # A re-run refuses to continue past the failed node.
    rerun = controller.run("-e", "corral_release=0.2.1")
    assert rerun.returncode != 0
    assert "roll it back with -e corral_rollback_node=node1" in rerun.stdout
    # The operator rolls it back: undrained on its old image, recorded active.
    back = controller.run("-e", "corral_rollback_node=node1")
    assert back.returncode == 0, _out(back)
    for lock in controller.lock():
        record = lock.read_rollout("update-to-0.2.1")
        assert record is not None
        assert record.nodes["node1"].state == "active"
        assert record.nodes["node1"].release == V1
    controller.reset()


def test_preflight_refuses_while_another_node_is_powered_off(controller: Controller) -> None:
    hostvars = controller.session.hostvars("node3")
    ipmi = [
        "ipmitool",
        "-I",
        "lanplus",
        "-H",
        str(hostvars["corral_bmc_address"]),
        "-p",
        str(hostvars["corral_bmc_port"]),
        "-U",
        str(hostvars["corral_bmc_user"]),
        "-E",
        "chassis",
        "power",
    ]
    env = {**os.environ, "IPMI_PASSWORD": str(hostvars["corral_bmc_password"])}
    subprocess.run([*ipmi, "off"], check=True, capture_output=True, env=env, timeout=30)
    try:
        before = len(controller.session.lab.boots())
        run = controller.run("-e", f"corral_bundle={controller.good.bundle}")
        assert run.returncode != 0
        assert "preflight refused: node3 did not answer" in run.stdout, _out(run)
        assert controller.boots_since(before) == []
        for lock in controller.lock():
            assert lock.holder() is None
    finally:
        subprocess.run([*ipmi, "on"], check=True, capture_output=True, env=env, timeout=30)
        controller.reset()


def test_a_second_rollout_is_refused_and_told_who_holds_the_lock(controller: Controller) -> None:
    for lock in controller.lock():
        lock.acquire("update-by-the-web-button", "corral-updater worker 7")
    before = len(controller.session.lab.boots())
    run = controller.run("-e", f"corral_bundle={controller.good.bundle}")
    assert run.returncode != 0
    assert "held by rollout update-by-the-web-button (corral-updater worker 7" in run.stdout, _out(run)
    assert controller.boots_since(before) == []
    controller.reset()


def test_killed_in_the_middle_of_a_node_a_rerun_finishes_it_without_a_second_boot(
    controller: Controller,
) -> None:
    before = len(controller.session.lab.boots())
    process = subprocess.Popen(
        controller.command("-e", f"corral_bundle={controller.good.bundle}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=controller.env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and not controller.boots_since(before):
            time.sleep(0.2)
        assert controller.boots_since(before), "node1 never started its trial boot"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    # Its per-node run (a session of its own) does not go on alone: the kernel tells it its parent died.
    deadline = time.monotonic() + 60
    while _per_node_runs():
        assert time.monotonic() < deadline, f"the killed run's per-node plays go on: {_per_node_runs()}"
        time.sleep(0.5)
    run = controller.run("-e", f"corral_release={V2}")
    assert run.returncode == 0, _out(run)
    assert controller.releases() == dict.fromkeys(NODES, V2)
    boots = controller.boots_since(before)
    assert sorted(node for node, _, _ in boots) == list(NODES), boots
    # The re-run is what finished node1, from where it stood (rebooted, or about to): no drain again.
    resumed = re.search(r"ROLLING_TIMING node=node1 resumed_at=(\w+)", run.stdout)
    assert resumed, _out(run)
    assert resumed.group(1) in ("boot", "verify"), resumed.group(0)
    controller.reset()


def _per_node_runs() -> list[str]:
    """Command lines of per-node plays (``ansible-playbook ... -e @.../rollout-vars.json``) on this host."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "rollout-vars.json" in cmdline and "ansible-playbook" in cmdline:
                found.append(cmdline[:200])
    return found


def test_a_stale_worker_cannot_set_a_boot_pointer_after_a_newer_rollout_took_over(
    controller: Controller,
) -> None:
    boot = LabBootService(controller.session.name)
    for lock in controller.lock():
        old = lock.acquire("update-old", "worker that hung")
        lock.break_lock(old.token)
        new = lock.acquire("update-new", "new worker")
        boot.boot_once("node2", None, new.token)  # the new rollout has written to node2
        with pytest.raises(StaleToken):
            lock.set_boot_pointer(old.token, "node2", {"once": controller.bad.image})
    # Even a worker that passed the ZooKeeper check before it stalled is refused at the boot service.
    with pytest.raises(StaleBootToken):
        boot.boot_once("node2", controller.bad.image, old.token)
    assert controller.session.lab.boot_pointer("node2").next is None
    controller.reset()


# An Ansible callback that stops the play right after one task on one host until the test removes its mark:
# the test takes the cluster over from the paused run at exactly that point (the run's token becomes stale).
_PAUSE_CALLBACK = """
import os
import time
from pathlib import Path

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pause_after_task"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result):
        wanted = (os.environ["CORRAL_PAUSE_HOST"], os.environ["CORRAL_PAUSE_AFTER_TASK"])
        if (result._host.get_name(), result._task.name) != wanted:
            return
        mark = Path(os.environ["CORRAL_PAUSE_DIR"]) / "paused"
        mark.write_text(result._task.name)
        deadline = time.monotonic() + 300
        while mark.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
"""


@pytest.mark.parametrize(
    ("step", "last_write"),
    [
        ("drain", "Record the node state: draining"),
        ("reboot", "Boot the new image once"),
        ("undrain", "Make the new image the node's default"),
    ],
)
def test_a_run_taken_over_right_before_a_node_changing_step_stops_there_and_changes_nothing(
    controller: Controller, tmp_path: Path, step: str, last_write: str
) -> None:
    """issue 19 item 1b: each of drain, reboot and undrain follows a write the run's token let through (its
    node record, the one-shot boot pointer, the default boot pointer). A newer run takes the cluster over
    right after that write (the same rollout, a newer token: what a new worker does after its predecessor
    died): the old run's play, still alive, must stop before the step (owns_cluster.yml) and leave node1 as
    it was."""
    double, pause = tmp_path / "double", tmp_path / "pause"
    double.mkdir()
    pause.mkdir()
    (pause / "pause_after_task.py").write_text(_PAUSE_CALLBACK)
    before = len(controller.session.lab.boots())
    boot_id = controller.session.boot_id("node1")
    old: LockHolder | None = None
    env = {
        **controller.env(),
        SERVICE_DOUBLE_DIR: str(double),
        "ANSIBLE_CALLBACK_PLUGINS": str(pause),
        "ANSIBLE_CALLBACKS_ENABLED": "pause_after_task",
        "CORRAL_PAUSE_HOST": "node1",
        "CORRAL_PAUSE_AFTER_TASK": last_write,
        "CORRAL_PAUSE_DIR": str(pause),
    }
    try:
        command = controller.command(
            "-e",
            f"corral_bundle={controller.good.bundle}",
            check_vars={"rolling_node_roles": [SERVICE_DOUBLE]},
        )
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env
        ) as process:
            try:
                deadline = time.monotonic() + 300
                while not (pause / "paused").exists():
                    assert process.poll() is None, f"the run ended before {last_write!r}"
                    assert time.monotonic() < deadline, f"node1 never reached {last_write!r}"
                    time.sleep(0.2)
                for lock in controller.lock():
                    holder = lock.holder()
                    assert holder is not None
                    newer = lock.acquire(holder.rollout_id, "the run that took over")
                    assert newer.token > holder.token
                    old = holder
                (pause / "paused").unlink()
                out, _ = process.communicate(timeout=300)
            finally:
                if process.poll() is None:
                    process.kill()
        assert process.returncode != 0, out[-6000:]
        assert old is not None
        if step == "reboot":  # the reboot block's rescue sees the stale token and leaves the node alone
            assert "was fenced off" in out, out[-6000:]
        else:
            assert f"fencing token {old.token} is stale" in out, out[-6000:]
        changed = [(action, edge, node) for action, edge, node, _ in double_log(double)]
        rebooted = [(node, kind) for node, _, kind in controller.boots_since(before)]
        print(f"\n[rolling] taken over after {last_write!r}: double {changed}, boots {rebooted}")
        if step == "drain":
            assert changed == []
            assert rebooted == []
        elif step == "reboot":
            assert changed == [("drain", "start", "node1"), ("drain", "end", "node1")]
            assert rebooted == []
            assert controller.session.boot_id("node1") == boot_id
        else:
            assert changed == [("drain", "start", "node1"), ("drain", "end", "node1")]
            assert rebooted == [("node1", "once")]
        for lock in controller.lock():
            progress = lock.read_progress(old.rollout_id)
            expected = {"drain": "draining", "reboot": "rebooting", "undrain": "verifying"}[step]
            assert {node: record.state for node, record in progress.items()} == {"node1": expected}
    finally:
        controller.reset()  # a failed case leaves no rollout behind for the next one
