"""corral.cloud.ceph_osd_release: raise require-osd-release once every OSD runs a new Ceph major.

``ceph/versions.json`` and ``ceph/osd_dump.json`` were recorded on a lab cluster of Debian's Ceph 16.2 (see
fixtures/RECORDING.md); the other releases are the same documents with the OSDs' version strings changed,
since only Pacific can run here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.unit.fixtures.module_harness import Replay, collection_module, recording, run_main

report = collection_module("module_utils.ceph_report")
module = collection_module("modules.ceph_osd_release")

CLI = ["ceph", "--cluster", "ceph", "--connect-timeout", "10"]
QUINCY = "ceph version 17.2.7 (b12291d110049b2f35e32e0de30d70e9a4c060d2) quincy (stable)"


def _versions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(recording("ceph/versions.json")["stdout"])
    return data


def _pacific() -> str:
    (text,) = _versions()["osd"]
    return str(text)


def _osds_on(*texts: str) -> dict[str, Any]:
    versions = copy.deepcopy(_versions())
    count = sum(versions["osd"].values())
    versions["osd"] = {text: count // len(texts) for text in texts}
    return versions


def _dump(required: str) -> str:
    dump = json.loads(recording("ceph/osd_dump.json")["stdout"])
    dump["require_osd_release"] = required
    return json.dumps(dump)


def _replay(versions: dict[str, Any], required: str) -> Replay:
    replay = Replay()
    replay.add([*CLI, "osd", "dump", "--format", "json"], 0, _dump(required))
    replay.add([*CLI, "versions", "--format", "json"], 0, json.dumps(versions))
    replay.add([*CLI, "osd", "require-osd-release", "quincy"], 0, "")
    return replay


def test_the_recorded_pacific_cluster_already_requires_pacific() -> None:
    assert "pacific" in _pacific()
    required = json.loads(recording("ceph/osd_dump.json")["stdout"])["require_osd_release"]
    assert report.osd_release_step(_versions(), required) == {
        "running": "pacific",
        "required": "pacific",
        "set_to": None,
    }


def test_every_osd_on_a_new_major_raises_the_minimum_to_it() -> None:
    step = report.osd_release_step(_osds_on(QUINCY), "pacific")
    assert step == {"running": "quincy", "required": "pacific", "set_to": "quincy"}


def test_osds_on_two_majors_are_refused_with_what_to_do() -> None:
    with pytest.raises(report.CephOutputError, match=r"several Ceph releases.*finish the rollout"):
        report.osd_release_step(_osds_on(_pacific(), QUINCY), "pacific")


def test_osds_older_than_the_minimum_and_unreadable_versions_are_refused() -> None:
    with pytest.raises(
        report.CephOutputError, match=r"the OSDs run pacific \(16\) but the cluster requires quincy"
    ):
        report.osd_release_step(_versions(), "quincy")
    with pytest.raises(report.CephOutputError, match="cannot read a Ceph version"):
        report.osd_release_step(_osds_on("ceph version banana"), "pacific")
    with pytest.raises(report.CephOutputError, match="names no OSD daemon"):
        report.osd_release_step({"mon": {_pacific(): 3}}, "pacific")


def test_the_module_changes_nothing_on_the_recorded_cluster(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = _replay(_versions(), "pacific")
    result = run_main(module.main, {}, replay, monkeypatch, capsys)
    assert result["changed"] is False, result
    assert result["set_to"] is None
    assert [call[5:] for call in replay.calls] == [
        ["osd", "dump", "--format", "json"],
        ["versions", "--format", "json"],
    ]


def test_the_module_sets_the_new_major_once_every_osd_runs_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = _replay(_osds_on(QUINCY), "pacific")
    result = run_main(module.main, {"release": "quincy"}, replay, monkeypatch, capsys)
    assert result["changed"] is True, result
    assert result["set_to"] == "quincy"
    assert replay.calls[-1] == [*CLI, "osd", "require-osd-release", "quincy"]


def test_the_module_refuses_when_the_osds_do_not_run_the_release_the_plan_expects(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = _replay(_versions(), "pacific")
    result = run_main(module.main, {"release": "quincy"}, replay, monkeypatch, capsys)
    assert result["failed"] is True
    assert "the plan expects the OSDs on quincy after the last node, but they run pacific" in result["msg"]
    assert not any("require-osd-release" in call for call in replay.calls)
