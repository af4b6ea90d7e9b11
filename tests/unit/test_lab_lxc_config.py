"""A node's LXC config carries the lab's rules: fixed MAC, no gateway, absolute paths, loop disks."""

from __future__ import annotations

from pathlib import Path

from updater.lab.containers import NodeSpec, render_config
from updater.lab.layout import LabLayout


def _config(loops: tuple[str, ...] = ("/dev/loop7", "/dev/loop12")) -> str:
    layout = LabLayout("citest", 3)
    return render_config(layout, NodeSpec("node2", 2, loops), Path("/h/pre"), Path("/h/post"))


def _values(config: str, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip() for line in config.splitlines() if line.split("=", 1)[0].strip() == key
    ]


def test_the_node_has_a_fixed_mac_its_address_and_no_gateway() -> None:
    config = _config()
    assert _values(config, "lxc.net.0.hwaddr") == ["02:c0:77:03:00:02"]
    assert _values(config, "lxc.net.0.ipv4.address") == ["10.77.3.12/24"]
    assert _values(config, "lxc.net.0.link") == ["crl-citest"]
    assert not _values(config, "lxc.net.0.ipv4.gateway")


def test_apparmor_is_unconfined_and_every_path_is_absolute() -> None:
    config = _config()
    assert _values(config, "lxc.apparmor.profile") == ["unconfined"]
    assert _values(config, "lxc.rootfs.path") == ["dir:/var/lib/corral-lab/citest/nodes/node2/rootfs"]
    assert _values(config, "lxc.hook.pre-start") == ["/h/pre node2"]
    assert _values(config, "lxc.hook.post-stop") == ["/h/post node2"]


def test_each_data_disk_is_allowed_in_the_devices_cgroup_and_bound_in() -> None:
    config = _config()
    allowed = _values(config, "lxc.cgroup.devices.allow")
    assert "b 7:7 rwm" in allowed
    assert "b 7:12 rwm" in allowed
    mounts = _values(config, "lxc.mount.entry")
    assert "/dev/loop7 dev/loop7 none bind,create=file 0 0" in mounts
    assert "/dev/loop12 dev/loop12 none bind,create=file 0 0" in mounts


def test_the_state_volume_is_bound_at_var_lib_corral() -> None:
    mounts = _values(_config(()), "lxc.mount.entry")
    assert mounts == ["/var/lib/corral-lab/citest/nodes/node2/state var/lib/corral none bind,create=dir 0 0"]
