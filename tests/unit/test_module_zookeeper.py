"""corral.cloud.zookeeper_status on real ZooKeeper 3.8 AdminServer answers, and the drain's quorum rule.

fixtures/zookeeper/ holds AdminServer responses recorded from a real 3-member ZooKeeper 3.8.0 ensemble
(Debian bookworm's package) on 127.0.0.1: every member healthy, the leader with one follower stopped, and the
last member left without a quorum.
"""

from __future__ import annotations

import io
import urllib.error
from typing import Any

import pytest

from tests.unit.fixtures.module_harness import Replay, collection_module, recording, run_main

zk = collection_module("module_utils.zookeeper_report")
zookeeper_status = collection_module("modules.zookeeper_status")


def responses(name: str) -> dict[str, tuple[int, str]]:
    recorded = recording(f"zookeeper/{name}.json")["responses"]
    return {command: (answer["status"], answer["body"]) for command, answer in recorded.items()}


def test_follower_serves_in_a_three_member_ensemble() -> None:
    status = zk.summarize(responses("member1"))
    assert status["serving"] is True
    assert status["mode"] == "follower"
    assert status["voting_members"] == ["1", "2", "3"]
    assert status["quorum_size"] == 3
    assert status["synced_followers"] is None


def test_leader_reports_its_synced_followers() -> None:
    status = zk.summarize(responses("member3"))
    assert status["mode"] == "leader"
    assert status["synced_followers"] == 2
    assert status["quorum_size"] == 3


def test_leader_sees_a_missing_follower() -> None:
    status = zk.summarize(responses("leader_one_follower_down"))
    assert status["serving"] is True
    assert status["synced_followers"] == 1


def test_member_without_quorum_is_not_serving() -> None:
    recorded = responses("no_quorum")
    assert recorded["monitor"][0] == 500  # ZooKeeper 3.8 answers monitor with a NullPointerException here
    status = zk.summarize(recorded)
    assert status["serving"] is False
    assert status["mode"] == "not serving"
    assert status["error"] == "This ZooKeeper instance is not currently serving requests"


def test_an_answer_that_is_not_json_is_an_error() -> None:
    with pytest.raises(zk.ZooKeeperOutputError, match="did not return JSON"):
        zk.summarize({"stat": (200, "<html>proxy error</html>")})


@pytest.mark.parametrize(
    ("voting", "serving", "leaving", "ok"),
    [
        (3, ["1", "2", "3"], "1", True),  # 2 of 3 remain
        (3, ["2", "3"], "2", False),  # one member already gone: taking another loses quorum
        (3, ["2", "3"], "1", True),  # the leaving member is already down: nothing changes
        (5, ["1", "2", "3", "4"], "4", True),  # 3 of 5 remain
        (5, ["1", "2", "3"], "3", False),
        (1, ["1"], "1", False),
    ],
)
def test_removal_keeps_quorum(voting: int, serving: list[str], leaving: str, ok: bool) -> None:
    verdict = zk.removal_keeps_quorum(voting, serving, leaving)
    assert verdict["ok"] is ok
    assert verdict["needed"] == voting // 2 + 1


def test_removal_message_says_what_is_missing() -> None:
    verdict = zk.removal_keeps_quorum(3, ["2", "3"], "2")
    assert verdict["message"] == "1 of 3 members keep serving without 2; a quorum needs 2"


class RecordedAdminServer:
    """Stands in for open_url with the recorded answers (HTTP errors raised as urllib does)."""

    def __init__(self, base: str, answers: dict[str, tuple[int, str]]) -> None:
        self.base = base
        self.answers = answers
        self.urls: list[str] = []

    def __call__(self, url: str, **_: Any) -> Any:
        self.urls.append(url)
        command = url.removeprefix(f"{self.base}/commands/")
        status, body = self.answers[command]
        if status >= 400:
            raise urllib.error.HTTPError(url, status, "error", {}, io.BytesIO(body.encode()))  # type: ignore[arg-type]
        response = io.BytesIO(body.encode())
        response.status = status  # type: ignore[attr-defined]
        return response


def test_module_reports_a_member_without_quorum(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RecordedAdminServer("http://127.0.0.1:8080", responses("no_quorum"))
    monkeypatch.setattr(zookeeper_status, "open_url", server)
    result = run_main(zookeeper_status.main, {}, Replay(), monkeypatch, capsys)
    assert result["reachable"] is True
    assert result["serving"] is False
    assert result["mode"] == "not serving"
    assert server.urls == [f"http://127.0.0.1:8080/commands/{c}" for c in ("stat", "monitor", "voting_view")]


def test_module_reports_the_leader(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RecordedAdminServer("http://127.0.0.1:18083", responses("member3"))
    monkeypatch.setattr(zookeeper_status, "open_url", server)
    result = run_main(
        zookeeper_status.main, {"url": "http://127.0.0.1:18083/"}, Replay(), monkeypatch, capsys
    )
    assert (result["serving"], result["mode"], result["synced_followers"]) == (True, "leader", 2)
    assert result["voting_members"] == ["1", "2", "3"]


def test_module_reports_an_unreachable_member(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(url: str, **_: Any) -> Any:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(zookeeper_status, "open_url", refused)
    result = run_main(zookeeper_status.main, {}, Replay(), monkeypatch, capsys)
    assert result["reachable"] is False
    assert result["serving"] is False
    assert "Connection refused" in result["error"]
