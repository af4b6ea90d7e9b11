"""corral.cloud.ceph_status and ceph_ok_to_stop on real Ceph 16.2 outputs.

Every fixture under fixtures/ceph/ was recorded from a real Ceph 16.2.15 cluster (3 monitors, 1 manager,
3 BlueStore OSDs on 127.0.0.1) in the state its name says; see each file's ``recorded_from``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible.module_utils import basic  # type: ignore[import-untyped]
from ansible.module_utils.testing import patch_module_args  # type: ignore[import-untyped]

from tests.unit.fixtures.module_harness import Replay, collection_module, recording, run_main

report = collection_module("module_utils.ceph_report")
ceph_status = collection_module("modules.ceph_status")
ceph_ok_to_stop = collection_module("modules.ceph_ok_to_stop")

CLI = ["ceph", "--cluster", "ceph", "--connect-timeout", "10"]


def stdout_json(name: str) -> Any:
    return json.loads(recording(f"ceph/{name}.json")["stdout"])


# --- ceph status ------------------------------------------------------------------------------------------


def test_healthy_cluster_reports_quorum_osds_and_clean_pgs() -> None:
    summary = report.summarize_status(stdout_json("status_health_ok"))
    assert summary["fsid"] == "36941acd-866a-4251-b5f2-11255c76f6f4"
    assert summary["health"] == {"status": "HEALTH_OK", "checks": {}, "codes": []}
    assert summary["mons"]["quorum"] == ["a", "b", "c"]
    assert summary["mons"]["all_in_quorum"] is True
    assert summary["osds"] == {"num": 3, "up": 3, "in": 3, "all_up_in": True, "remapped_pgs": 0}
    assert summary["pgs"]["by_state"] == {"active+clean": 33}
    assert summary["pgs"]["all_active_clean"] is True
    assert summary["pgs"]["inactive"] == 0
    assert summary["mgr"]["available"] is True


def test_down_osd_shows_in_counts_codes_and_pg_states() -> None:
    summary = report.summarize_status(stdout_json("status_osd_down"))
    assert summary["health"]["status"] == "HEALTH_WARN"
    assert summary["health"]["codes"] == ["OSD_DOWN", "OSD_FLAGS"]
    assert summary["health"]["checks"]["OSD_DOWN"]["message"] == "1 osds down"
    assert summary["osds"]["up"] == 2
    assert summary["osds"]["in"] == 3
    assert summary["osds"]["all_up_in"] is False
    assert summary["pgs"]["all_active_clean"] is False
    assert summary["pgs"]["by_state"] == {"active+undersized": 33}


def test_degraded_pgs_are_counted_per_state() -> None:
    summary = report.summarize_status(stdout_json("status_pg_degraded"))
    assert "PG_DEGRADED" in summary["health"]["codes"]
    assert summary["pgs"]["by_state"]["active+undersized+degraded"] == 10
    assert summary["pgs"]["active_clean"] == 0
    assert summary["pgs"]["inactive"] == 0


def test_lost_monitor_shows_partial_quorum() -> None:
    summary = report.summarize_status(stdout_json("status_mon_down"))
    assert summary["mons"]["num"] == 3
    assert summary["mons"]["quorum"] == ["b", "c"]
    assert summary["mons"]["all_in_quorum"] is False
    assert "MON_DOWN" in summary["health"]["codes"]


def test_health_detail_carries_the_detail_lines() -> None:
    health = report.parse_health(stdout_json("health_detail_mon_down"))
    assert health["checks"]["MON_DOWN"]["detail"] == [
        "mon.a (rank 0) addr v2:127.0.0.1:13300/0 is down (out of quorum)"
    ]
    assert health["checks"]["OSD_DOWN"]["detail"] == ["osd.0 (root=default,host=vm) is down"]


def test_health_ok_is_healthy_with_no_accepted_codes() -> None:
    health = report.parse_health(stdout_json("health_detail_ok"))
    assert report.health_verdict(health, []) == {"healthy": True, "unaccepted": [], "accepted": []}


def test_an_unlisted_warning_code_makes_the_cluster_unhealthy() -> None:
    health = report.parse_health(stdout_json("health_detail_noout"))
    verdict = report.health_verdict(health, [])
    assert verdict == {"healthy": False, "unaccepted": ["OSD_FLAGS"], "accepted": []}
    assert report.describe_unhealthy(health, verdict["unaccepted"]) == (
        "HEALTH_WARN (OSD_FLAGS: 1 OSDs or CRUSH {nodes, device-classes} have "
        "{NOUP,NODOWN,NOIN,NOOUT} flags set)"
    )


def test_a_listed_warning_code_is_accepted_but_others_still_fail() -> None:
    health = report.parse_health(stdout_json("health_detail_osd_down"))
    assert report.health_verdict(health, ["OSD_FLAGS"]) == {
        "healthy": False,
        "unaccepted": ["OSD_DOWN"],
        "accepted": ["OSD_FLAGS"],
    }
    assert report.health_verdict(health, ["OSD_FLAGS", "OSD_DOWN"])["healthy"] is True


def test_an_error_severity_check_is_never_accepted() -> None:
    health = report.parse_health(
        {
            "status": "HEALTH_ERR",
            "checks": {
                "PG_AVAILABILITY": {
                    "severity": "HEALTH_ERR",
                    "summary": {"message": "Reduced data availability: 33 pgs inactive", "count": 33},
                    "muted": False,
                }
            },
        }
    )
    assert report.health_verdict(health, ["PG_AVAILABILITY"])["unaccepted"] == ["PG_AVAILABILITY"]


def test_muted_checks_do_not_count() -> None:
    raw = stdout_json("health_detail_noout")
    raw["checks"]["OSD_FLAGS"]["muted"] = True
    assert report.health_verdict(report.parse_health(raw), [])["healthy"] is True


def test_status_without_maps_is_a_clear_error() -> None:
    with pytest.raises(report.CephOutputError, match="lacks"):
        report.summarize_status({"fsid": "x", "health": {"status": "HEALTH_OK"}})


def test_module_returns_structured_status_and_verdict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    replay.add_recording(recording("ceph/status_osd_down.json"), [*CLI, "status", "--format", "json"])
    replay.add_recording(
        recording("ceph/health_detail_osd_down.json"), [*CLI, "health", "detail", "--format", "json"]
    )
    result = run_main(
        ceph_status.main, {"detail": True, "accepted_checks": ["OSD_FLAGS"]}, replay, monkeypatch, capsys
    )
    assert result["changed"] is False
    assert result["healthy"] is False
    assert result["unaccepted_checks"] == ["OSD_DOWN"]
    assert result["accepted_checks_raised"] == ["OSD_FLAGS"]
    assert result["message"] == "HEALTH_WARN (OSD_DOWN: 1 osds down)"
    assert result["health"]["checks"]["OSD_DOWN"]["detail"] == ["osd.0 (root=default,host=vm) is down"]
    assert result["osds"]["up"] == 2


def test_module_fails_clearly_when_the_cluster_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    replay.add(
        [*CLI, "status", "--format", "json"],
        1,
        "",
        "[errno 110] RADOS timed out (error connecting to the cluster)\n",
    )
    result = run_main(ceph_status.main, {}, replay, monkeypatch, capsys)
    assert result["failed"] is True
    assert "RADOS timed out" in result["msg"]


# --- ok-to-stop ---------------------------------------------------------------------------------------------


def test_osd_ok_to_stop_when_safe() -> None:
    rec = recording("ceph/osd_ok_to_stop_ok.json")
    answer = report.parse_osd_ok_to_stop(rec["rc"], rec["stdout"], rec["stderr"], [0])
    assert answer["ok_to_stop"] is True
    assert answer["num_not_ok_pgs"] == 0
    assert len(answer["pgs_would_become_degraded"]) == 33


def test_osd_ok_to_stop_refused_names_the_pgs_that_would_go_inactive() -> None:
    rec = recording("ceph/osd_ok_to_stop_refused.json")
    assert rec["rc"] == 16
    answer = report.parse_osd_ok_to_stop(rec["rc"], rec["stdout"], rec["stderr"], [1])
    assert answer["ok_to_stop"] is False
    assert answer["num_not_ok_pgs"] == 33
    assert "2.1f" in answer["pgs_would_become_inactive"]
    assert (
        answer["message"]
        == "Error EBUSY: unsafe to stop osd(s) at this time (33 PGs are or would become offline)"
    )


def test_mon_ok_to_stop_reports_the_remaining_quorum() -> None:
    rec = recording("ceph/mon_ok_to_stop_ok.json")
    answer = report.parse_mon_ok_to_stop(rec["rc"], rec["stdout"], rec["stderr"], ["a"])
    assert answer == {
        "ok_to_stop": True,
        "mons": ["a"],
        "remaining_quorum": ["b", "c"],
        "message": "quorum should be preserved (b,c) after stopping [a]",
    }


def test_mon_ok_to_stop_refused_when_quorum_would_be_lost() -> None:
    rec = recording("ceph/mon_ok_to_stop_refused.json")
    answer = report.parse_mon_ok_to_stop(rec["rc"], rec["stdout"], rec["stderr"], ["b"])
    assert answer["ok_to_stop"] is False
    assert answer["remaining_quorum"] == ["c"]
    assert answer["message"] == "not enough monitors would be available (c) after stopping mons [b]"


def test_other_failures_are_errors_not_answers() -> None:
    with pytest.raises(report.CephOutputError, match=r"rc=2"):
        report.parse_osd_ok_to_stop(2, "", "Error ENOENT: osd.9 does not exist", [9])
    with pytest.raises(report.CephOutputError, match=r"rc=2"):
        report.parse_mon_ok_to_stop(2, "", "Error ENOENT: mon.z does not exist", ["z"])


def test_module_asks_for_every_osd_of_a_host_and_its_monitor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    replay.add_recording(
        recording("ceph/osd_ls_tree.json"), [*CLI, "osd", "ls-tree", "vm", "--format", "json"]
    )
    replay.add_recording(
        recording("ceph/osd_ok_to_stop_refused.json"),
        [*CLI, "osd", "ok-to-stop", "0", "1", "2", "--format", "json"],
    )
    replay.add_recording(recording("ceph/mon_ok_to_stop_ok.json"), [*CLI, "mon", "ok-to-stop", "a"])
    result = run_main(ceph_ok_to_stop.main, {"host": "vm", "mons": ["a"]}, replay, monkeypatch, capsys)
    assert result["ok_to_stop"] is False
    assert result["osd"]["ok_to_stop"] is False
    assert result["mon"]["ok_to_stop"] is True
    assert "unsafe to stop osd(s)" in result["message"]
    assert "failed" not in result


def test_module_fails_when_unsafe_if_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    replay.add_recording(recording("ceph/mon_ok_to_stop_refused.json"), [*CLI, "mon", "ok-to-stop", "b"])
    result = run_main(
        ceph_ok_to_stop.main, {"mons": ["b"], "fail_when_unsafe": True}, replay, monkeypatch, capsys
    )
    assert result["failed"] is True
    assert result["msg"].startswith("stopping would make data or the monitor quorum unavailable")
    assert "not enough monitors would be available (c)" in result["msg"]
    assert replay.calls == [[*CLI, "mon", "ok-to-stop", "b"]]


def test_module_waits_until_the_cluster_is_whole_and_asks_for_the_detail_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``wait`` the module looks again every ``poll_interval`` (one module run, not an Ansible retry per
    look); a look that fails (a monitor election) is "not yet"; the first whole look ends the wait."""
    looks = [
        (1, "", "[errno 110] RADOS timed out (error connecting to the cluster)\n"),
        tuple(recording("ceph/status_pg_degraded.json")[k] for k in ("rc", "stdout", "stderr")),
        tuple(recording("ceph/status_health_ok.json")[k] for k in ("rc", "stdout", "stderr")),
    ]
    detail = recording("ceph/health_detail_ok.json")
    calls: list[list[str]] = []

    def run_command(module: object, args: list[str], **_: object) -> tuple[int, str, str]:
        calls.append(list(args))
        if args == [*CLI, "status", "--format", "json"]:
            rc, out, err = looks.pop(0)
            return int(rc), str(out), str(err)
        assert args == [*CLI, "health", "detail", "--format", "json"], args
        return detail["rc"], detail["stdout"], detail["stderr"]

    sleeps: list[float] = []
    monkeypatch.setattr(ceph_status.time, "sleep", sleeps.append)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    capsys.readouterr()
    with patch_module_args({"detail": True, "wait": 60, "poll_interval": 0.5}), pytest.raises(SystemExit):
        ceph_status.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["whole"], result["healthy"], result["looks"]) == (True, True, 3)
    assert result["pgs"]["all_active_clean"] is True
    assert sleeps == [0.5, 0.5]
    assert [c[5:] for c in calls] == [["status", "--format", "json"]] * 3 + [
        ["health", "detail", "--format", "json"]
    ]


def test_module_without_wait_looks_once_and_reports_what_it_saw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = Replay()
    replay.add_recording(recording("ceph/status_pg_degraded.json"), [*CLI, "status", "--format", "json"])
    result = run_main(ceph_status.main, {}, replay, monkeypatch, capsys)
    assert (result["whole"], result["looks"]) == (False, 1)
    assert len(replay.calls) == 1
