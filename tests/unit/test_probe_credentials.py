"""The S3 access of the probe beside a rollout: when it probes S3, the bucket it uses, how the keys are read
from the play that runs ``radosgw-admin user info`` (events shaped as ansible-runner hands them over,
recorded from the play), and how the rollout's ``Probe`` passes them (environment only, never argv or a log
line) or records why S3 is not probed. Nothing here reaches the network: the one real play runs on a
``local`` connection against a stand-in ``radosgw-admin``, and the probe is a stand-in script.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

from updater.domain.inventory import inventory_from_ansible
from updater.services.accounts.auth import REDACTED, RedactSecrets
from updater.services.cluster.access import Cluster
from updater.services.rollouts import execution as rollout_execution
from updater.services.rollouts import probe_credentials
from updater.services.rollouts.probe_credentials import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    ProbeCredentialsError,
    S3Access,
    S3Keys,
    bucket_name,
    ceph_rolled,
    environment_without_keys,
    keys_from_run,
    s3_access,
    user_keys,
)

ACCESS = "AKIAPROBE0TEST0KEY01"
SECRET = "pr0beSecretKey/ForTheUnitTests+0123456789"
CENSORED = {
    "censored": "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
}
READ = "Read the S3 user"
HAND = "Hand the S3 user over to the update service"

# `radosgw-admin user info --uid corral` as Ceph prints it (Reef), keys replaced.
USER_INFO = {
    "user_id": "corral",
    "display_name": "Corral",
    "email": "",
    "suspended": 0,
    "max_buckets": 1000,
    "subusers": [],
    "keys": [{"user": "corral", "access_key": ACCESS, "secret_key": SECRET}],
    "swift_keys": [],
    "caps": [],
    "op_mask": "read, write, delete",
    "type": "rgw",
}


def _event(kind: str, host: str | None = None, task: str | None = None, **data: Any) -> dict[str, Any]:
    """An event as ansible-runner hands it to ``event_handler`` (fields the code does not read left out)."""
    event_data: dict[str, Any] = {
        "playbook": "keys.yml",
        "play": "Read the S3 keys of the availability probe",
    }
    if host is not None:
        event_data.update(host=host, remote_addr=host)
    if task is not None:
        event_data.update(task=task, task_action="ansible.builtin.command", task_args="")
    event_data.update(data)
    stdout = {"runner_on_ok": f"ok: [{host}]", "runner_on_unreachable": f"fatal: [{host}]: UNREACHABLE!"}
    return {"event": kind, "stdout": stdout.get(kind, ""), "event_data": event_data}


def _events(*middle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _event("playbook_on_start"),
        _event("playbook_on_play_start"),
        *middle,
        _event("playbook_on_stats"),
    ]


# Recorded from the play (node1 answering; a host the inventory does not have; node2 refusing ssh).
ANSWERED = _events(
    _event("playbook_on_task_start", task=READ),
    _event("runner_on_start", "node1", READ),
    _event("runner_on_ok", "node1", READ, res=CENSORED),
    _event("playbook_on_task_start", task=HAND),
    _event("runner_on_start", "node1", HAND),
    _event("runner_on_ok", "node1", HAND, res=CENSORED),
)
NO_SUCH_HOST = _events(_event("warning"), _event("playbook_on_no_hosts_matched"))
UNREACHABLE = _events(
    _event("playbook_on_task_start", task=READ),
    _event("runner_on_start", "node2", READ),
    _event("runner_on_unreachable", "node2", READ, res=CENSORED),
)


def _answer(rc: int = 0, stdout: str = json.dumps(USER_INFO), stderr: str = "", msg: str = "") -> str:
    return json.dumps({"rc": rc, "stdout": stdout, "stderr": stderr, "msg": msg})


# --- when, and into which bucket ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hostvars", "rolled"),
    [
        ({}, True),  # the default rolling_node_roles includes ceph
        ({"rolling_node_roles": ["node_base", "zookeeper", "ceph", "endpoint"]}, True),
        ({"rolling_node_roles": "{{ my_roles }}"}, True),  # not a list the inventory sets: the default
        ({"rolling_node_roles": []}, False),  # engine only
        ({"rolling_node_roles": ["zookeeper", "endpoint"]}, False),
    ],
)
def test_s3_is_probed_when_the_rollout_rolls_ceph(hostvars: dict[str, Any], rolled: bool) -> None:
    assert ceph_rolled(hostvars) is rolled


BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def test_the_bucket_is_named_after_the_rollout_and_is_a_valid_s3_bucket_name() -> None:
    name = bucket_name("update-to-0.2.0-20261121T130509Z")
    assert name == "corral-probe-update-to-0-2-0-20261121t130509z"
    long_a, long_b = (
        "update-to-" + "9" * 40 + "-rc.1-20261121T130509Z",
        "update-to-" + "9" * 40 + "-rc.2-2026",
    )
    for rollout_id in (long_a, long_b, "--Weird__ID..", "update-to-1.0.0+build.7-20261121T130509Z"):
        assert BUCKET.match(bucket_name(rollout_id)), bucket_name(rollout_id)
        assert ".." not in bucket_name(rollout_id)
    assert bucket_name(long_a) != bucket_name(long_b)
    assert len(bucket_name(long_a)) == 63


# --- the keys in radosgw-admin's answer ---------------------------------------------------------------------
def test_the_users_own_key_is_taken_from_radosgw_admins_json() -> None:
    info = {**USER_INFO, "keys": [{"user": "corral:swift", "access_key": "OTHER1", "secret_key": "other"}]}
    info["keys"].append({"user": "corral", "access_key": ACCESS, "secret_key": SECRET})
    keys = user_keys(json.dumps(info))
    assert (keys.access_key, keys.secret_key) == (ACCESS, SECRET)


def test_a_user_without_keys_or_an_answer_that_is_not_json_is_refused_without_echoing_it() -> None:
    with pytest.raises(ProbeCredentialsError, match="the RGW user corral has no S3 key"):
        user_keys(json.dumps({**USER_INFO, "keys": []}))
    with pytest.raises(ProbeCredentialsError, match="not JSON") as error:
        user_keys(f'{{"keys": [{{"access_key": "{ACCESS}", "secret_key": "{SECRET}"')  # cut short
    assert ACCESS not in str(error.value)
    assert SECRET not in str(error.value)


def test_keys_are_read_from_the_answer_the_play_left() -> None:
    keys = keys_from_run(ANSWERED, _answer(), node="node1")
    assert (keys.access_key, keys.secret_key) == (ACCESS, SECRET)
    assert ACCESS not in repr(keys)
    assert SECRET not in repr(keys)


@pytest.mark.parametrize(
    ("events", "answer", "timed_out", "reason"),
    [
        (
            ANSWERED,
            _answer(22, "", "could not fetch user info: no user info saved\n"),
            False,
            "radosgw-admin user info --uid corral failed on node1 (exit 22): could not fetch user info: "
            "no user info saved",
        ),
        (
            ANSWERED,
            _answer(2, "", "", "[Errno 2] No such file or directory: b'radosgw-admin'"),
            False,
            "failed on node1 (exit 2): [Errno 2] No such file or directory",
        ),
        (NO_SUCH_HOST, None, False, "node1: node1 is not a host of the inventory"),
        (UNREACHABLE, None, False, "node1: the play ended without an answer"),  # another host's trouble
        (
            _events(_event("runner_on_failed", "node1", HAND, res=CENSORED)),
            None,
            False,
            "could not take the S3 keys over",
        ),
        (_events(), None, True, "on node1 gave no answer within 60 s"),
        (ANSWERED, "{not json", False, "the play's answer is not JSON"),
        (ANSWERED, _answer(0, f"keys: {ACCESS} {SECRET}"), False, "radosgw-admin printed something"),
    ],
)
def test_why_the_keys_could_not_be_read_is_said_without_a_key(
    events: list[dict[str, Any]], answer: str | None, timed_out: bool, reason: str
) -> None:
    with pytest.raises(ProbeCredentialsError) as error:
        keys_from_run(events, answer, node="node1", timed_out=timed_out)
    assert reason in str(error.value)
    assert ACCESS not in str(error.value)
    assert SECRET not in str(error.value)


def test_an_unreachable_monitor_is_named() -> None:
    with pytest.raises(ProbeCredentialsError, match="node2 is unreachable"):
        keys_from_run(UNREACHABLE, None, node="node2")


def test_the_keys_reach_the_probe_through_its_environment_only() -> None:
    access = S3Access("http://10.77.0.100", "corral-probe-r1", S3Keys(ACCESS, SECRET), "node1")
    assert access.arguments() == ["--s3-endpoint", "http://10.77.0.100", "--s3-bucket", "corral-probe-r1"]
    environment = access.environment({"PATH": "/usr/bin"})
    assert environment == {"PATH": "/usr/bin", ACCESS_KEY_ENV: ACCESS, SECRET_KEY_ENV: SECRET}
    assert SECRET not in repr(access)
    assert environment_without_keys(environment) == {"PATH": "/usr/bin"}


# --- which node, and nothing run when there is no S3 --------------------------------------------------------
def _cluster(tmp_path: Path, vip: str | None) -> Cluster:
    hostvars = {f"node{i}": {"corral_address": f"10.0.0.{i}"} for i in (1, 2, 3)}
    data = {"_meta": {"hostvars": hostvars}, "nodes": {"hosts": list(hostvars)}}
    return Cluster(inventory_from_ansible(data), "127.0.0.1:2181", None, tmp_path / "inventory.yml", vip)


def _nothing_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("nothing may be run to decide there is no S3 to probe")

    monkeypatch.setattr(probe_credentials, "ansible_inventory_data", refuse)
    monkeypatch.setattr(probe_credentials, "fetch_keys", refuse)


def test_engine_only_runs_have_no_vip_so_nothing_is_read_and_no_s3_is_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nothing_run(monkeypatch)
    assert s3_access(_cluster(tmp_path, None), "r1") is None
    assert (
        s3_access(_cluster(tmp_path, "10.77.0.100"), "r1", hostvars={"rolling_node_roles": ["endpoint"]})
        is None
    )


def test_the_keys_are_read_on_the_first_ceph_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fetch(source: Path, node: str, **_kwargs: Any) -> S3Keys:
        asked.append(node)
        return S3Keys(ACCESS, SECRET)

    monkeypatch.setattr(probe_credentials, "fetch_keys", fetch)
    cluster = _cluster(tmp_path, "10.77.0.100")
    access = s3_access(cluster, "update-to-0.2.0-20261121T130509Z", hostvars={})
    assert asked == [cluster.inventory.quorum["ceph_mon"][0]]
    assert access == S3Access(
        "http://10.77.0.100",
        "corral-probe-update-to-0-2-0-20261121t130509z",
        S3Keys(ACCESS, SECRET),
        asked[0],
    )


# --- the real play, on a local connection -------------------------------------------------------------------
def test_the_play_hands_the_keys_over_and_no_event_or_file_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "radosgw-admin"
    fake.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "user info --uid corral" ] || {{ echo "unexpected: $*" >&2; exit 22; }}\n'
        f"cat <<'EOF'\n{json.dumps(USER_INFO, indent=4)}\nEOF\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    inventory = tmp_path / "inventory.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(json.dumps({"all": {"children": {"nodes": {"hosts": {"node1": local}}}}}))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[Mapping[str, Any]] = []
    real_run = ansible_runner.run

    def run(**kwargs: Any) -> Any:
        handler = kwargs["event_handler"]
        kwargs["event_handler"] = lambda event: seen.append(event) or handler(event)
        return real_run(**kwargs)

    monkeypatch.setattr(ansible_runner, "run", run)
    keys = probe_credentials.fetch_keys(inventory, "node1")
    assert (keys.access_key, keys.secret_key) == (ACCESS, SECRET)
    assert [e["event"] for e in seen if e["event"].startswith("runner_on_")].count("runner_on_ok") == 2
    text = json.dumps(seen, default=str)
    assert ACCESS not in text
    assert SECRET not in text
    assert not list(scratch.glob("corral-probe-keys-*"))  # the private data directory is gone


# --- the rollout's Probe ------------------------------------------------------------------------------------
FAKE_PROBE = """\
import json, os, pathlib, signal, sys, time
args = sys.argv[1:]
def opt(name):
    return args[args.index(name) + 1] if name in args else None
report = pathlib.Path(opt("--report"))
calls = report.parent / "calls.jsonl"
with calls.open("a") as out:
    out.write(json.dumps({"argv": args, "access": os.environ.get("CORRAL_S3_ACCESS_KEY"),
                          "secret": os.environ.get("CORRAL_S3_SECRET_KEY")}) + "\\n")
if opt("--s3-endpoint") and os.environ.get("FAKE_PROBE_S3_FAILS"):
    print("corral-probe: could not set up the clients: ClientError: AccessDenied for "
          + os.environ["CORRAL_S3_ACCESS_KEY"], file=sys.stderr)
    sys.exit(2)
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
if opt("--ready-file"):
    pathlib.Path(opt("--ready-file")).touch()
(report.parent / "running").touch()
while not stopped:
    time.sleep(0.02)
services = {"zookeeper": {"failures": 0}} | ({"s3-write": {"failures": 0}} if opt("--s3-endpoint") else {})
report.write_text(json.dumps({"passed": True, "services": services, "verdicts": {}}))
"""


class _Recorder:
    def __init__(self) -> None:
        self.redactor = RedactSecrets()
        self.lines: list[str] = []

    def log(self, text: str, node: str | None = None, stream: str = "event") -> None:
        self.lines.append(self.redactor.redact(text))


@pytest.fixture
def fake_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "corral-probe"
    script.write_text(f"#!{sys.executable}\n{FAKE_PROBE}")
    script.chmod(0o755)
    monkeypatch.setattr(rollout_execution, "_probe_command", lambda: str(script))
    run = tmp_path / "run-1"
    run.mkdir()
    return run


def _run_probe(
    run: Path, cluster: Cluster, recorder: _Recorder
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    probe = rollout_execution.Probe(cluster, run, "update-to-0.2.0-20261121T130509Z", recorder)  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while not (run / "running").exists():
        assert time.monotonic() < deadline, (run / "probe.log").read_text()
        time.sleep(0.05)
    report = probe.stop()
    calls = [json.loads(line) for line in (run / "calls.jsonl").read_text().splitlines()]
    return report, calls


def test_the_probe_gets_s3_with_its_keys_in_the_environment_and_never_in_argv_or_the_log(
    tmp_path: Path, fake_probe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = _cluster(tmp_path, "10.77.0.100")
    access = S3Access("http://10.77.0.100", bucket_name("r"), S3Keys(ACCESS, SECRET), "node1")
    monkeypatch.setattr(rollout_execution, "s3_access", lambda _cluster, _rollout: access)
    recorder = _Recorder()
    report, calls = _run_probe(fake_probe, cluster, recorder)
    assert len(calls) == 1
    argv = calls[0]["argv"]
    assert argv[argv.index("--s3-endpoint") + 1] == "http://10.77.0.100"
    assert argv[argv.index("--s3-bucket") + 1] == "corral-probe-r"
    assert (calls[0]["access"], calls[0]["secret"]) == (ACCESS, SECRET)
    assert not any(ACCESS in arg or SECRET in arg for arg in argv)
    assert "s3-write" in report["services"]
    assert "notes" not in report
    assert any(
        "probe: S3 through http://10.77.0.100 in bucket corral-probe-r" in line for line in recorder.lines
    )
    assert recorder.redactor.redact(f"{ACCESS} {SECRET}") == f"{REDACTED} {REDACTED}"


def test_without_a_vip_the_probe_has_no_s3_client_and_no_note(
    tmp_path: Path, fake_probe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nothing_run(monkeypatch)
    monkeypatch.setenv(ACCESS_KEY_ENV, "inherited-access-key")  # never handed to a probe without S3
    report, calls = _run_probe(fake_probe, _cluster(tmp_path, None), _Recorder())
    assert [call["access"] for call in calls] == [None]
    assert "--s3-endpoint" not in calls[0]["argv"]
    assert "--vip-url" not in calls[0]["argv"]
    assert report == {"passed": True, "services": {"zookeeper": {"failures": 0}}, "verdicts": {}}


def test_keys_that_cannot_be_read_leave_the_probe_without_s3_and_the_report_says_why(
    tmp_path: Path, fake_probe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(_cluster: Cluster, _rollout: str) -> None:
        raise ProbeCredentialsError("radosgw-admin user info --uid corral on node1: node1 is unreachable")

    monkeypatch.setattr(rollout_execution, "s3_access", refused)
    recorder = _Recorder()
    report, calls = _run_probe(fake_probe, _cluster(tmp_path, "10.77.0.100"), recorder)
    assert len(calls) == 1
    assert "--s3-endpoint" not in calls[0]["argv"]
    assert "--vip-url" in calls[0]["argv"]
    assert report["passed"] is True
    assert report["notes"] == [
        "S3 not probed: its keys could not be read: radosgw-admin user info --uid corral on node1: "
        "node1 is unreachable"
    ]
    assert f"probe: {report['notes'][0]}" in recorder.lines


def test_s3_clients_the_probe_cannot_set_up_are_dropped_and_noted_with_the_keys_redacted(
    tmp_path: Path, fake_probe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = S3Access("http://10.77.0.100", "corral-probe-r", S3Keys(ACCESS, SECRET), "node1")
    monkeypatch.setattr(rollout_execution, "s3_access", lambda _cluster, _rollout: access)
    monkeypatch.setenv("FAKE_PROBE_S3_FAILS", "1")
    report, calls = _run_probe(fake_probe, _cluster(tmp_path, "10.77.0.100"), _Recorder())
    assert ["--s3-endpoint" in call["argv"] for call in calls] == [True, False]
    assert calls[1]["access"] is None
    assert report["services"] == {"zookeeper": {"failures": 0}}
    (note,) = report["notes"]
    assert note.startswith("S3 not probed: corral-probe could not set up its S3 clients (exit 2):")
    assert f"AccessDenied for {REDACTED}" in note
    assert ACCESS not in note
