"""The Ceph drive policy: which offered disks become OSDs, and why the others do not.

fixtures/disks/loop_lab.json is a real recording (lsblk, blkid -p and ceph-bluestore-tool on four loop devices
holding nothing, ext4, a GPT and a BlueStore label, plus the host's mounted root disk). server_mixed.json is
composed by hand in the same documented formats for a realistic server (OS SSD, HDDs, an LVM OSD, NVMe with
an OSD of this cluster, a CD-ROM); its ``recorded_from`` says so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.fixtures.module_harness import Replay, collection_module, recording, run_main

policy_mod = collection_module("module_utils.disk_policy")
ceph_disk_policy = collection_module("modules.ceph_disk_policy")

LAB = recording("disks/loop_lab.json")
LAB_FSID = "36941acd-866a-4251-b5f2-11255c76f6f4"  # the cluster whose ceph-osd --mkfs wrote the loop's label
SERVER = recording("disks/server_mixed.json")
SERVER_FSID = SERVER["cluster_fsid"]
HDDS = ["/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde", "/dev/sdf"]
ALL_SERVER = ["/dev/sda", *HDDS, "/dev/nvme0n1", "/dev/nvme1n1", "/dev/nvme2n1", "/dev/sr0"]


def decide_on(
    rec: dict[str, Any], offered: list[str], policy: dict[str, Any], fsid: str | None
) -> dict[str, Any]:
    inventory = policy_mod.parse_lsblk(rec["lsblk"]["stdout"])
    signatures = {path: policy_mod.parse_blkid_export(r["stdout"]) for path, r in rec["blkid"].items()}
    labels = {
        path: policy_mod.parse_bluestore_label(r["stdout"], path)
        for path, r in rec["bluestore_labels"].items()
    }
    decisions = policy_mod.decide(
        inventory, offered, policy_mod.OsdPolicy.from_mapping(policy), signatures, labels, fsid
    )
    return {d.path: d for d in decisions}


# --- the recorded loop devices: each kind of content is left alone, with its reason ------------------------


def lab_paths() -> dict[str, str]:
    devices: dict[str, str] = LAB["devices"]
    return devices


def test_blank_loop_disk_becomes_an_osd() -> None:
    paths = lab_paths()
    decided = decide_on(LAB, list(paths.values()), {}, "00000000-0000-4000-8000-000000000000")
    blank = decided[paths["blank"]]
    assert blank.decision == "new-osd"
    assert blank.reason == "blank 2.0 GiB disk matching the policy"


def test_ext4_gpt_and_foreign_bluestore_are_untouched_with_their_reasons() -> None:
    paths = lab_paths()
    decided = decide_on(LAB, list(paths.values()), {}, "00000000-0000-4000-8000-000000000000")
    assert decided[paths["ext4"]].decision == "skip"
    assert decided[paths["ext4"]].reason == "holds a filesystem or signature (ext4)"
    assert decided[paths["gpt"]].decision == "skip"
    assert decided[paths["gpt"]].reason == "holds a partition table (gpt)"
    assert decided[paths["bluestore"]].decision == "skip"
    assert decided[paths["bluestore"]].reason == (
        f"holds a foreign BlueStore OSD (osd.7, cluster {LAB_FSID}, "
        "this cluster is 00000000-0000-4000-8000-000000000000)"
    )


def test_lsblk_alone_would_not_see_the_signatures() -> None:
    # Without a udev database (containers, early boot) lsblk reports no fstype/pttype: blkid -p must decide.
    lsblk = json.loads(LAB["lsblk"]["stdout"])["blockdevices"]
    assert all(dev["fstype"] is None and dev["pttype"] is None for dev in lsblk)
    paths = lab_paths()
    inventory = policy_mod.parse_lsblk(LAB["lsblk"]["stdout"])
    without_blkid = policy_mod.decide(inventory, [paths["ext4"]], policy_mod.OsdPolicy())
    assert without_blkid[0].decision == "new-osd"  # which is exactly why the module always runs blkid -p


def test_own_bluestore_label_is_an_existing_osd() -> None:
    paths = lab_paths()
    decided = decide_on(LAB, [paths["bluestore"]], {}, LAB_FSID)
    assert decided[paths["bluestore"]].decision == "existing-osd"
    assert decided[paths["bluestore"]].osd_id == 7


def test_mounted_disk_is_never_used() -> None:
    decided = decide_on(LAB, ["/dev/vda"], {}, None)
    assert decided["/dev/vda"].decision == "skip"
    assert decided["/dev/vda"].reason == "mounted at /"


# --- a realistic mixed server ------------------------------------------------------------------------------


def test_default_policy_on_the_mixed_server() -> None:
    decided = decide_on(SERVER, ALL_SERVER, {}, SERVER_FSID)
    summary = {path: (d.decision, d.reason) for path, d in decided.items()}
    assert summary == {
        "/dev/sda": ("skip", "has mounted children: sda1 at /boot/efi, sda2 at /"),
        "/dev/sdb": ("new-osd", "blank 7.3 TiB disk matching the policy"),
        "/dev/sdc": ("new-osd", "blank 7.3 TiB disk matching the policy"),
        "/dev/sdd": ("new-osd", "blank 7.3 TiB disk matching the policy"),
        "/dev/sde": ("skip", "is an LVM physical volume (in use by ceph--5e1c2a4e--osd--block--9b8d)"),
        "/dev/sdf": ("new-osd", "blank 3.6 TiB disk matching the policy"),
        "/dev/nvme0n1": ("new-osd", "blank 1.5 TiB disk matching the policy"),
        "/dev/nvme1n1": ("existing-osd", "already osd.12 of this cluster"),
        "/dev/nvme2n1": ("new-osd", "blank 2.9 TiB disk matching the policy"),
        "/dev/sr0": ("skip", "not a whole disk (lsblk type 'rom')"),
    }


def test_rotational_rule_selects_hdds_only() -> None:
    decided = decide_on(SERVER, ALL_SERVER, {"rotational": True}, SERVER_FSID)
    new = [p for p, d in decided.items() if d.decision == "new-osd"]
    assert new == ["/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sdf"]
    assert decided["/dev/nvme0n1"].reason == "policy wants rotational disks; this one is non-rotational"
    # an existing OSD of this cluster stays an OSD whatever the rules say
    assert decided["/dev/nvme1n1"].decision == "existing-osd"


def test_size_range_rule() -> None:
    decided = decide_on(SERVER, ALL_SERVER, {"min_size": "4T", "max_size": "8T"}, SERVER_FSID)
    assert decided["/dev/sdf"].reason == "smaller (3.6 TiB) than policy min_size (4.0 TiB)"
    assert decided["/dev/nvme2n1"].reason == "smaller (2.9 TiB) than policy min_size (4.0 TiB)"
    assert decided["/dev/sdb"].decision == "new-osd"
    decided = decide_on(SERVER, ALL_SERVER, {"max_size": "2T"}, SERVER_FSID)
    assert decided["/dev/sdb"].reason == "larger (7.3 TiB) than policy max_size (2.0 TiB)"
    assert decided["/dev/nvme0n1"].decision == "new-osd"


def test_model_and_serial_patterns() -> None:
    decided = decide_on(SERVER, ALL_SERVER, {"model": "^INTEL SSDPE2"}, SERVER_FSID)
    assert [p for p, d in decided.items() if d.decision == "new-osd"] == ["/dev/nvme0n1"]
    assert decided["/dev/nvme2n1"].reason == (
        "model 'SAMSUNG MZWLJ3T2HBLS-00007' does not match policy model '^INTEL SSDPE2'"
    )
    decided = decide_on(SERVER, ALL_SERVER, {"serial": "^WKD0A1B[34]$"}, SERVER_FSID)
    assert [p for p, d in decided.items() if d.decision == "new-osd"] == ["/dev/sdc", "/dev/sdd"]


def test_exclusions_by_path_name_and_serial() -> None:
    decided = decide_on(SERVER, ALL_SERVER, {"exclude": ["/dev/sdb", "sdc", "WKD0A1B4"]}, SERVER_FSID)
    assert decided["/dev/sdb"].reason == "excluded by policy (/dev/sdb)"
    assert decided["/dev/sdc"].reason == "excluded by policy (sdc)"
    assert decided["/dev/sdd"].reason == "excluded by policy (WKD0A1B4)"


def test_foreign_osd_on_the_server_is_left_alone() -> None:
    rec = json.loads(json.dumps(SERVER))
    rec["blkid"]["/dev/nvme2n1"]["stdout"] = "DEVNAME=/dev/nvme2n1\nTYPE=ceph_bluestore\nUSAGE=other\n"
    rec["bluestore_labels"]["/dev/nvme2n1"] = rec["foreign_label_example"]
    decided = decide_on(rec, ["/dev/nvme2n1"], {"rotational": False}, SERVER_FSID)
    assert decided["/dev/nvme2n1"].decision == "skip"
    assert decided["/dev/nvme2n1"].reason.startswith(
        "holds a foreign BlueStore OSD (osd.3, cluster 1b2c3d4e-"
    )


def test_only_offered_disks_are_considered() -> None:
    decided = decide_on(SERVER, ["/dev/sdb", "/dev/sdz"], {}, SERVER_FSID)
    assert list(decided) == ["/dev/sdb", "/dev/sdz"]
    assert decided["/dev/sdz"].reason == "no such block device on this node"


def test_a_policy_that_matches_no_disk_selects_nothing() -> None:
    decided = decide_on(SERVER, HDDS, {"rotational": False}, SERVER_FSID)
    assert not [d for d in decided.values() if d.decision != "skip"]


def test_older_lsblk_string_booleans_and_single_mountpoint() -> None:
    old = json.dumps(
        {
            "blockdevices": [
                {
                    "name": "sdx",
                    "type": "disk",
                    "size": 1000,
                    "rota": "1",
                    "ro": "0",
                    "rm": "0",
                    "mountpoint": None,
                },
                {
                    "name": "sdy",
                    "type": "disk",
                    "size": 1000,
                    "rota": "0",
                    "ro": "1",
                    "rm": "0",
                    "mountpoint": None,
                },
            ]
        }
    )
    inventory = policy_mod.parse_lsblk(old)
    assert inventory.by_path["/dev/sdx"].rotational is True
    decided = policy_mod.decide(inventory, ["/dev/sdx", "/dev/sdy"], policy_mod.OsdPolicy())
    assert [d.decision for d in decided] == ["new-osd", "skip"]
    assert decided[1].reason == "read-only device"


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"rotate": True}, "unknown key(s) rotate"),
        ({"rotational": "yes"}, "rotational: expected true, false or null"),
        ({"min_size": "lots"}, "min_size: 'lots' is not a size"),
        ({"min_size": -1}, "must not be negative"),
        ({"min_size": "2T", "max_size": "1T"}, "min_size (2T) is larger than max_size (1T)"),
        ({"model": "(["}, "model: '([' is not a valid regular expression"),
        ({"exclude": "/dev/sda"}, "exclude: expected a list"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_message(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(policy_mod.PolicyError) as error:
        policy_mod.OsdPolicy.from_mapping(policy)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100G", 100 * 1024**3),
        ("1.5T", int(1.5 * 1024**4)),
        ("512MiB", 512 * 1024**2),
        ("4096", 4096),
        (7, 7),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert policy_mod.parse_size(text, "min_size") == size


def test_offering_a_disk_twice_is_an_error() -> None:
    inventory = policy_mod.parse_lsblk(SERVER["lsblk"]["stdout"])
    with pytest.raises(policy_mod.DeviceDataError, match="offered twice"):
        policy_mod.decide(inventory, ["/dev/sdb", "/dev/sdb"], policy_mod.OsdPolicy())


def test_output_that_is_not_lsblk_json_is_an_error() -> None:
    with pytest.raises(policy_mod.DeviceDataError, match="not `lsblk --json` output"):
        policy_mod.parse_lsblk("NAME MAJ:MIN RM SIZE RO TYPE MOUNTPOINTS\nsda 8:0 0 1T 0 disk\n")


# --- the module, on the recorded loop devices --------------------------------------------------------------


def test_module_runs_lsblk_blkid_and_show_label_and_reports_every_disk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = lab_paths()
    offered = [paths["blank"], paths["ext4"], paths["gpt"], paths["bluestore"], "/dev/does-not-exist"]
    replay = Replay()
    replay.add(["lsblk", "--json", "-O", "-b", *offered[:4]], LAB["lsblk"]["rc"], LAB["lsblk"]["stdout"])
    for path in offered[:4]:
        replay.add_recording(LAB["blkid"][path])
    replay.add_recording(LAB["bluestore_labels"][paths["bluestore"]])
    monkeypatch.setattr(ceph_disk_policy, "is_block_device", lambda path: path in offered[:4])
    result = run_main(
        ceph_disk_policy.main,
        {
            "devices": offered,
            "policy": {"rotational": None},
            "cluster_fsid": "00000000-0000-4000-8000-000000000000",
        },
        replay,
        monkeypatch,
        capsys,
    )
    assert result["changed"] is False
    assert result["new_osds"] == [paths["blank"]]
    assert result["existing_osds"] == []
    assert result["skipped"] == offered[1:]
    assert [d["reason"] for d in result["disks"]][1:] == [
        "holds a filesystem or signature (ext4)",
        "holds a partition table (gpt)",
        f"holds a foreign BlueStore OSD (osd.7, cluster {LAB_FSID}, this cluster is "
        "00000000-0000-4000-8000-000000000000)",
        "no such block device on this node",
    ]


def test_module_refuses_a_bad_policy_before_looking_at_disks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    result = run_main(
        ceph_disk_policy.main,
        {"devices": ["/dev/sdb"], "policy": {"size": "1T"}},
        replay,
        monkeypatch,
        capsys,
    )
    assert result["failed"] is True
    assert "unknown key(s) size" in result["msg"]
    assert replay.calls == []
