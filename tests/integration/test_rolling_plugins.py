"""The rolling update's controller-side action plugins, run by the real ``ansible-playbook`` against a real
ZooKeeper on 127.0.0.1 and a real lab boot-pointer directory and image store (no containers needed):
the update lock, fenced progress and boot pointers, and staging a real signed bundle."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from tests.support.zookeeper_server import ZooKeeperServer
from tests.unit import bundle_kit
from updater.lab.boot_service import LabBootService
from updater.lab.image import pack_canonical, sha256_file
from updater.lab.release import Release
from updater.services.cluster.lock import ClusterLock
from updater.services.vendor import keys as vendor_keys

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB = "plugtest"
_roots = itertools.count()


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")) as server:
        yield server


@pytest.fixture
def zk_root() -> str:
    return f"/rolling-{next(_roots)}/corral/update"


def _image(tmp: Path, version: str) -> Path:
    tree = tmp / f"tree-{version}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/corral-release").write_text(
        Release(version, "2026-11-21T00:00:00Z", "a" * 64, "b" * 64).render()
    )
    out = tmp / f"image-{version}.tar"
    pack_canonical(tree, out)
    return out


@dataclass
class Cluster:
    """A 3-node inventory, a lab directory for the boot pointers, and ZooKeeper."""

    tmp: Path
    zookeeper: ZooKeeperServer
    zk_root: str
    lab_root: Path
    inventory: Path
    v1: str
    v2: str

    def playbook(self, tasks: list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
        play = [{"name": "test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        path = self.tmp / "play.yml"
        path.write_text(yaml.safe_dump(play, sort_keys=False))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",  # one line per message, so tests can search it
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(path), *extra],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=env,
            check=False,
        )

    def common(self) -> dict[str, Any]:
        return {"zookeeper_hosts": self.zookeeper.hosts, "root": self.zk_root}

    def boot(self) -> dict[str, Any]:
        return {**self.common(), "lab": LAB, "lab_root": str(self.lab_root)}

    def lock(self) -> Iterator[ClusterLock]:
        client = KazooClient(hosts=self.zookeeper.hosts, timeout=5.0)
        client.start(timeout=15)
        try:
            yield ClusterLock(client, self.zk_root)
        finally:
            client.stop()
            client.close()


def _write_inventory(path: Path) -> None:
    hosts = {
        f"node{n}": {
            "corral_address": f"10.99.0.{10 + n}",
            "corral_site": "site1",
            "ansible_connection": "local",
        }
        for n in (1, 2, 3)
    }
    data = {"all": {"children": {"nodes": {"hosts": hosts, "vars": {"corral_cluster_name": "plugtest"}}}}}
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def cluster(tmp_path: Path, zookeeper: ZooKeeperServer, zk_root: str) -> Cluster:
    lab_root = tmp_path / "labs"
    (lab_root / LAB).mkdir(parents=True)
    config = {"name": LAB, "index": 202, "nodes": 3, "disks": 0, "disk_size_gib": 1.0, "image": "0" * 64}
    (lab_root / LAB / "lab.json").write_text(json.dumps(config))
    service = LabBootService(LAB, lab_root)
    ids = []
    for version in ("1.2.0", "1.3.0"):
        artifact = _image(tmp_path, version)
        ids.append(service.publish_image(artifact, sha256_file(artifact)))
    for n in (1, 2, 3):
        (lab_root / LAB / "nodes" / f"node{n}" / "boot").mkdir(parents=True)
        (lab_root / LAB / "nodes" / f"node{n}" / "boot" / "default").write_text(ids[0] + "\n")
    inventory = tmp_path / "inventory.yml"
    _write_inventory(inventory)
    return Cluster(tmp_path, zookeeper, zk_root, lab_root, inventory, ids[0], ids[1])


def _result(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout + run.stderr


def test_the_lock_is_taken_taken_back_and_refused_to_another_rollout_naming_the_holder(
    cluster: Cluster,
) -> None:
    take = {"corral.cloud.update_lock": {**cluster.common(), "rollout_id": "update-a", "owner": "ops on ctl"}}
    first = cluster.playbook(
        [{**take, "register": "lock"}, {"ansible.builtin.debug": {"msg": "TOKEN={{ lock.token }}"}}]
    )
    assert first.returncode == 0, _result(first)
    assert "TOKEN=1" in first.stdout
    again = cluster.playbook(
        [{**take, "register": "lock"}, {"ansible.builtin.debug": {"msg": "TOKEN={{ lock.token }}"}}]
    )
    assert "TOKEN=2" in again.stdout, _result(again)
    other = {"corral.cloud.update_lock": {**cluster.common(), "rollout_id": "update-b", "owner": "web"}}
    refused = cluster.playbook([other])
    assert refused.returncode != 0
    assert "held by rollout update-a (ops on ctl" in refused.stdout
    assert "-e corral_lock_break=2" in refused.stdout
    broken = cluster.playbook(
        [{"corral.cloud.update_lock": {**cluster.common(), "state": "broken", "token": 2}}]
    )
    assert broken.returncode == 0, _result(broken)
    assert cluster.playbook([other]).returncode == 0


def test_a_run_checks_its_token_before_it_changes_a_node_and_a_taken_over_run_is_stopped(
    cluster: Cluster,
) -> None:
    """issue 19 item 1b: ``state: checked`` passes with the newest token and fails, saying the token is stale
    (what the per-node procedure's rescue looks for), once a newer run took the lock back."""
    take = {"corral.cloud.update_lock": {**cluster.common(), "rollout_id": "update-c", "owner": "worker 1"}}
    assert cluster.playbook([take]).returncode == 0
    token = next(lock.current_token() for lock in cluster.lock())

    def check(value: int) -> subprocess.CompletedProcess[str]:
        task = {"corral.cloud.update_lock": {**cluster.common(), "state": "checked", "token": value}}
        return cluster.playbook([task])

    assert check(token).returncode == 0, _result(check(token))
    assert cluster.playbook([take]).returncode == 0  # the takeover: the same rollout, a newer token
    stale = check(token)
    assert stale.returncode != 0
    assert f"fencing token {token} is stale: token {token + 1} was issued since" in stale.stdout, _result(
        stale
    )
    missing = cluster.playbook([{"corral.cloud.update_lock": {**cluster.common(), "state": "checked"}}])
    assert "state=checked needs token" in missing.stdout, _result(missing)
    for lock in cluster.lock():
        lock.release("update-c", token + 1)


def test_progress_is_planned_recorded_fenced_and_a_rerun_continues_without_redoing_a_node(
    cluster: Cluster,
) -> None:
    common = {**cluster.common(), "rollout_id": "update-to-1.3.0"}
    begin = {
        "corral.cloud.rollout_progress": {
            **common,
            "action": "begin",
            "token": "{{ lock.token }}",
            "nodes": "{{ groups['nodes'] }}",
            "target_release": "1.3.0",
        },
        "register": "begun",
    }
    take = {"corral.cloud.update_lock": {**common, "owner": "ops"}, "register": "lock"}

    def node(name: str, state: str, **more: str) -> dict[str, Any]:
        args = {**common, "action": "node", "token": "{{ lock.token }}", "node": name, "state": state, **more}
        return {"corral.cloud.rollout_progress": args}

    steps = [
        node("node1", "draining"),
        node("node1", "drained"),
        node("node1", "rebooting", boot_id="b-1"),
        node("node1", "verifying"),
        node("node1", "active", release="1.3.0"),
        node("node2", "draining"),
    ]
    show = {"ansible.builtin.debug": {"msg": "ORDER={{ begun.plan.node_order | join(',') }}"}}
    run = cluster.playbook([take, begin, show, *steps])
    assert run.returncode == 0, _result(run)
    assert "ORDER=node1,node2,node3" in run.stdout
    # The re-run (same rollout id) takes the lock back, plans from the recorded progress: node2 is
    # finished first, node1 is never taken again.
    rerun = cluster.playbook([take, begin, show])
    assert rerun.returncode == 0, _result(rerun)
    assert "ORDER=node2,node3" in rerun.stdout
    for lock in cluster.lock():
        record = lock.read_rollout("update-to-1.3.0")
        assert record is not None
        assert record.executed == ["node1", "node2"]
        assert record.nodes["node1"].is_done("1.3.0")
        assert record.state == "running"
        holder = lock.holder()
        assert holder is not None
        assert holder.token == 2
    # A node already on the target does not go to draining again; a second node may not start while a
    # quorum holder is in the procedure; a stale token is refused.
    again = cluster.playbook([take, node("node1", "draining")])
    assert again.returncode != 0
    assert "node node1 already runs 1.3.0" in again.stdout
    both = cluster.playbook([take, node("node3", "draining")])
    assert "quorum holders are taken alone" in both.stdout
    stale = cluster.playbook([{**node("node2", "drained"), "vars": {"lock": {"token": 1}}}])
    assert stale.returncode != 0
    assert "fencing token 1 is stale" in stale.stdout


def test_a_stale_worker_cannot_set_a_boot_pointer_after_a_newer_rollout_took_over(cluster: Cluster) -> None:
    def take(rollout: str) -> dict[str, Any]:
        return {"corral.cloud.update_lock": {**cluster.common(), "rollout_id": rollout}, "register": "lock"}

    def pointer(mode: str, image: str, token: str) -> dict[str, Any]:
        args = {**cluster.boot(), "token": token, "node": "node2", "mode": mode, "image": image}
        return {"corral.cloud.boot_pointer": args, "register": "ptr"}

    old = cluster.playbook([take("update-a"), pointer("once", cluster.v2, "{{ lock.token }}")])
    assert old.returncode == 0, _result(old)
    state = LabBootService(LAB, cluster.lab_root).state("node2")
    assert (state.once, state.default, state.token) == (cluster.v2, cluster.v1, 1)
    # The old worker stalls; an operator breaks its lock; a new rollout takes over and clears the pointer.
    newer = cluster.playbook(
        [
            {"corral.cloud.update_lock": {**cluster.common(), "state": "broken", "token": 1}},
            take("update-b"),
            {
                "corral.cloud.boot_pointer": {
                    **cluster.boot(),
                    "token": "{{ lock.token }}",
                    "node": "node2",
                    "mode": "clear",
                }
            },
        ]
    )
    assert newer.returncode == 0, _result(newer)
    late = cluster.playbook([pointer("default", cluster.v2, "1")])
    assert late.returncode != 0
    assert "fencing token 1 is stale" in late.stdout
    state = LabBootService(LAB, cluster.lab_root).state("node2")
    assert (state.once, state.default, state.token) == (None, cluster.v1, 3)
    for lock in cluster.lock():
        assert lock.boot_pointer("node2") == {"once": None, "default": cluster.v1}


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (tarball,) = out.glob("corral-cloud-*.tar.gz")
    return tarball


def _trust_dir(kit: bundle_kit.Kit, issued: bundle_kit.IssuedLicense, path: Path) -> Path:
    path.mkdir(mode=0o700)
    (path / "trust-root.json").write_bytes(kit.vendor.trust_root.read_bytes())
    (path / "keyring.json").write_bytes(kit.vendor.keyring.read_bytes())
    (path / "license.json").write_bytes(issued.document)
    (path / "entitlement-key").write_text(issued.key_path.read_text())
    (path / "entitlement-key").chmod(0o600)
    return path


def test_staging_a_signed_bundle_installs_its_collection_and_publishes_its_image(
    cluster: Cluster, collection_tarball: Path
) -> None:
    kit = bundle_kit.make_kit(cluster.tmp / "kit")
    issued = bundle_kit.issue(kit)
    artifacts = bundle_kit.make_artifacts(
        cluster.tmp / "art", "1.3.0", image=_image(cluster.tmp / "art", "1.3.0")
    )
    artifacts.collection = collection_tarball
    bundle = bundle_kit.build_bundle(kit, "1.3.0", artifacts=artifacts)
    trust = _trust_dir(kit, issued, cluster.tmp / "trust")
    args = {
        "trust_dir": str(trust),
        "staging_root": str(cluster.tmp / "staging"),
        "releases_root": str(cluster.tmp / "releases"),
        "installed_version": "1.2.0",
        "node_count": 3,
        "lab": LAB,
        "lab_root": str(cluster.lab_root),
    }
    show = {"ansible.builtin.debug": {"var": "staged"}}
    run = cluster.playbook(
        [{"corral.cloud.release_stage": {**args, "bundle": str(bundle)}, "register": "staged"}, show], "-v"
    )
    assert run.returncode == 0, _result(run)
    assert issued.key_path.read_text().strip() not in _result(run)
    collection = cluster.tmp / "releases/1.3.0/collections/ansible_collections/corral/cloud"
    assert json.loads((collection / "MANIFEST.json").read_text())["collection_info"]["name"] == "cloud"
    assert (collection / "playbooks").is_dir()
    assert cluster.v2 in run.stdout  # the image id the boot service now has
    assert (cluster.lab_root / "images" / f"{cluster.v2}.tar").is_file()
    # The same release again, by version: nothing restaged, image hash checked again on publish.
    rerun = cluster.playbook(
        [{"corral.cloud.release_stage": {**args, "release": "1.3.0"}, "register": "staged"}, show]
    )
    assert rerun.returncode == 0, _result(rerun)
    assert '"newly_staged": false' in rerun.stdout


def test_a_tampered_bundle_is_refused_naming_the_check_and_leaves_nothing(
    cluster: Cluster, collection_tarball: Path
) -> None:
    kit = bundle_kit.make_kit(cluster.tmp / "kit")
    issued = bundle_kit.issue(kit)
    artifacts = bundle_kit.make_artifacts(
        cluster.tmp / "art", "1.3.0", image=_image(cluster.tmp / "art", "1.3.0")
    )
    artifacts.collection = collection_tarball
    bundle = bundle_kit.build_bundle(kit, "1.3.0", artifacts=artifacts)
    members = bundle_kit.read_members(bundle)
    tampered = [
        (name, data.replace(b"CORRAL_VERSION=1.3.0", b"CORRAL_VERSION=6.6.6")) for name, data in members
    ]
    bundle_kit.rebuild(bundle, tampered)
    staging = cluster.tmp / "staging"
    args = {
        "bundle": str(bundle),
        "trust_dir": str(_trust_dir(kit, issued, cluster.tmp / "trust")),
        "staging_root": str(staging),
        "releases_root": str(cluster.tmp / "releases"),
        "installed_version": "1.2.0",
        "node_count": 3,
        "lab": LAB,
        "lab_root": str(cluster.lab_root),
    }
    run = cluster.playbook([{"corral.cloud.release_stage": args}])
    assert run.returncode != 0
    assert "refused (payload-hash-mismatch)" in run.stdout
    assert list(staging.iterdir()) == []
    assert not (cluster.tmp / "releases").exists()


def _stage_args(cluster: Cluster, bundle: Path, trust: Path) -> dict[str, Any]:
    return {
        "bundle": str(bundle),
        "trust_dir": str(trust),
        "staging_root": str(cluster.tmp / "staging"),
        "releases_root": str(cluster.tmp / "releases"),
        "installed_version": "1.2.0",
        "node_count": 3,
        "lab": LAB,
        "lab_root": str(cluster.lab_root),
    }


def test_staging_a_bundle_carrying_a_rotated_keyring_leaves_the_trust_directory_trusting_it(
    cluster: Cluster, collection_tarball: Path
) -> None:
    kit = bundle_kit.make_kit(cluster.tmp / "kit")
    issued = bundle_kit.issue(kit)
    trust = _trust_dir(kit, issued, cluster.tmp / "trust")  # trusts keyring version 1
    new_key, rotated = vendor_keys.rotate_key(kit.vendor_dir, now=bundle_kit.NOW)
    old_key = next(k for k in rotated.role_keys("release") if k != new_key)
    artifacts = bundle_kit.make_artifacts(
        cluster.tmp / "art", "1.3.0", image=_image(cluster.tmp / "art", "1.3.0")
    )
    artifacts.collection = collection_tarball
    bundle = bundle_kit.build_bundle(
        kit, "1.3.0", artifacts=artifacts, carry_keyring=True, keyids=[new_key, old_key]
    )
    assert (trust / "keyring.json").read_bytes() != rotated.envelope

    run = cluster.playbook([{"corral.cloud.release_stage": _stage_args(cluster, bundle, trust)}])

    assert run.returncode == 0, _result(run)
    assert (trust / "keyring.json").read_bytes() == rotated.envelope
    assert sorted(p.name for p in trust.iterdir()) == [
        "entitlement-key", "keyring.json", "license.json", "trust-root.json",
    ]  # fmt: skip


def test_a_refused_bundle_carrying_a_rotated_keyring_leaves_the_trust_directory_alone(
    cluster: Cluster,
) -> None:
    kit = bundle_kit.make_kit(cluster.tmp / "kit")
    trust = _trust_dir(kit, bundle_kit.issue(kit), cluster.tmp / "trust")
    before = (trust / "keyring.json").read_bytes()
    vendor_keys.rotate_key(kit.vendor_dir, now=bundle_kit.NOW)
    artifacts = bundle_kit.make_artifacts(
        cluster.tmp / "art", "1.3.0", image=_image(cluster.tmp / "art", "1.3.0")
    )
    bundle = bundle_kit.build_bundle(kit, "1.3.0", artifacts=artifacts, carry_keyring=True)
    members = bundle_kit.read_members(bundle)
    tampered = [(n, d.replace(b"CORRAL_VERSION=1.3.0", b"CORRAL_VERSION=6.6.6")) for n, d in members]
    assert tampered != members
    bundle_kit.rebuild(bundle, tampered)

    run = cluster.playbook([{"corral.cloud.release_stage": _stage_args(cluster, bundle, trust)}])

    assert run.returncode != 0
    assert (
        "refused (payload-hash-mismatch)" in run.stdout
    )  # the carried keyring verified; the payload did not
    assert (trust / "keyring.json").read_bytes() == before
    assert list((cluster.tmp / "staging").iterdir()) == []


def test_bad_arguments_get_clear_messages(cluster: Cluster) -> None:
    run = cluster.playbook([{"corral.cloud.update_lock": {**cluster.common(), "state": "released"}}])
    assert "state=released needs rollout_id, token" in run.stdout
    run = cluster.playbook(
        [{"corral.cloud.boot_pointer": {**cluster.boot(), "token": 1, "node": "node1", "mode": "once"}}]
    )
    assert "mode=once needs image" in run.stdout
    run = cluster.playbook([{"corral.cloud.release_stage": {"node_count": 3, "lab": LAB}}])
    assert "give bundle (a bundle file) or release (a staged version)" in run.stdout
    run = cluster.playbook(
        [{"corral.cloud.update_lock": {"zookeeper_hosts": "127.0.0.1:1", "rollout_id": "x", "timeout": 2}}]
    )
    assert "cannot reach the cluster's ZooKeeper ensemble at 127.0.0.1:1" in run.stdout
