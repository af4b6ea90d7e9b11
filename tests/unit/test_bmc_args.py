"""The BMC process's command line and password file: every bad input is refused with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from updater.lab.bmc import BmcConfigError, LxcPower, SubprocessPower, main, parse_args
from updater.lab.bmc.process import read_password_file


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "bmc-password"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


def lxc_argv(password_file: Path, *extra: str) -> list[str]:
    return [
        "--address",
        "127.77.3.2",
        "--user",
        "admin",
        "--password-file",
        str(password_file),
        "--lxcpath",
        "/var/lib/corral-lab/demo/lxc",
        "--name",
        "node2",
        *extra,
    ]


def test_lxc_command_line_gives_an_lxc_backend(password_file: Path) -> None:
    settings = parse_args(lxc_argv(password_file))
    assert settings.address == "127.77.3.2"
    assert settings.port == 623
    assert settings.user == "admin"
    assert settings.password == "s3cret"
    assert settings.node == "node2"
    assert isinstance(settings.power, LxcPower)
    assert settings.power.lxcpath == Path("/var/lib/corral-lab/demo/lxc")
    assert settings.power.cycle_off_seconds == 1.0


def test_the_lab_spelling_of_the_lxc_options_is_accepted(password_file: Path) -> None:
    argv = [
        "--address",
        "127.77.1.1",
        "--port",
        "623",
        "--user",
        "admin",
        "--password-file",
        str(password_file),
    ]
    argv += ["--lxc-path", "/srv/lxc", "--container", "corral-demo-node1", "--lab-dir", "/srv/lab"]
    settings = parse_args(argv)
    assert isinstance(settings.power, LxcPower)
    assert settings.node == "corral-demo-node1"
    assert settings.lab_dir == Path("/srv/lab")


def test_process_command_line_gives_a_process_backend(password_file: Path, tmp_path: Path) -> None:
    argv = ["--address", "::1", "--port", "6230", "--user", "u", "--password-file", str(password_file)]
    argv += ["--process-command", "sleep infinity", "--process-pidfile", str(tmp_path / "n1.pid")]
    settings = parse_args(argv)
    assert isinstance(settings.power, SubprocessPower)
    assert settings.power.argv == ["sleep", "infinity"]
    assert settings.node == "n1"


def test_password_is_not_in_the_settings_repr(password_file: Path) -> None:
    assert "s3cret" not in repr(parse_args(lxc_argv(password_file)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--address": "10.77.1.5"}, "loopback only"),
        ({"--address": "0.0.0.0"}, "loopback only"),  # noqa: S104 - the point: it must be refused
        ({"--address": "node1"}, "not an IP address"),
        ({"--port": "0"}, "UDP port 1-65535"),
        ({"--port": "70000"}, "UDP port 1-65535"),
        ({"--port": "x"}, "invalid int value"),
        ({"--cycle-off-seconds": "0.5"}, "give 1 to 60 seconds"),
        ({"--cycle-off-seconds": "61"}, "give 1 to 60 seconds"),
        ({"--session-idle-seconds": "0.5"}, "give 1 to 3600 seconds"),
        ({"--user": "root admin"}, "1-16 letters"),
        ({"--lxcpath": "relative/lxc"}, "must be absolute"),
        ({"--name": "node 1"}, "container name"),
    ],
)
def test_bad_arguments_are_refused(password_file: Path, change: dict[str, str], message: str) -> None:
    argv = lxc_argv(password_file)
    for option, value in change.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    with pytest.raises(BmcConfigError, match=message):
        parse_args(argv)


def test_a_backend_is_required_and_only_one(password_file: Path, tmp_path: Path) -> None:
    base = ["--address", "127.0.0.1", "--user", "admin", "--password-file", str(password_file)]
    with pytest.raises(BmcConfigError, match="either --lxcpath and --name, or --process-command"):
        parse_args(base)
    process = ["--process-command", "sleep 9", "--process-pidfile", str(tmp_path / "n.pid")]
    with pytest.raises(BmcConfigError, match="either --lxcpath and --name, or --process-command"):
        parse_args(lxc_argv(password_file, *process))
    with pytest.raises(BmcConfigError, match="--lxcpath and --name go together"):
        parse_args([*base, "--name", "node1"])
    with pytest.raises(BmcConfigError, match="--process-command and --process-pidfile go together"):
        parse_args([*base, "--process-command", "sleep 9"])
    with pytest.raises(BmcConfigError, match="--process-command is empty"):
        parse_args([*base, "--process-command", "  ", "--process-pidfile", str(tmp_path / "n.pid")])


def test_missing_required_options_are_named(password_file: Path) -> None:
    with pytest.raises(BmcConfigError, match="--user"):
        parse_args(["--address", "127.0.0.1", "--password-file", str(password_file)])


def test_there_is_no_password_option(password_file: Path) -> None:
    with pytest.raises(BmcConfigError, match="unrecognized arguments: --password"):
        parse_args(lxc_argv(password_file, "--password", "s3cret"))


def test_pid_files_must_be_absolute(password_file: Path) -> None:
    with pytest.raises(BmcConfigError, match=r"--pidfile bmc\.pid: give an absolute path"):
        parse_args(lxc_argv(password_file, "--pidfile", "bmc.pid"))
    argv = ["--address", "127.0.0.1", "--user", "a", "--password-file", str(password_file)]
    argv += ["--process-command", "sleep 9", "--process-pidfile", "n.pid"]
    with pytest.raises(BmcConfigError, match=r"--process-pidfile n\.pid: give an absolute path"):
        parse_args(argv)


def test_password_file_readable_by_others_is_refused(password_file: Path) -> None:
    password_file.chmod(0o644)
    with pytest.raises(BmcConfigError, match="mode 0644: others may read it; run chmod 600"):
        read_password_file(password_file)
    password_file.chmod(0o640)
    with pytest.raises(BmcConfigError, match="mode 0640"):
        read_password_file(password_file)


def test_password_file_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(BmcConfigError, match="No such file"):
        read_password_file(tmp_path / "absent")
    with pytest.raises(BmcConfigError, match="not a regular file"):
        read_password_file(tmp_path)
    link = tmp_path / "link"
    target = tmp_path / "target"
    target.write_text("pw")
    target.chmod(0o600)
    link.symlink_to(target)
    with pytest.raises(BmcConfigError, match="not a regular file"):
        read_password_file(link)


def test_password_file_contents_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(BmcConfigError, match="1-20 bytes, this one has 0"):
        read_password_file(path)
    path.write_text("x" * 21)
    with pytest.raises(BmcConfigError, match="this one has 21"):
        read_password_file(path)
    path.write_text("line one\nline two\n")
    with pytest.raises(BmcConfigError, match="printable"):
        read_password_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(BmcConfigError, match="not UTF-8"):
        read_password_file(path)


def test_one_final_newline_is_not_part_of_the_password(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.touch(mode=0o600)
    for content, password in [("pw", "pw"), ("pw\n", "pw"), ("pw\r\n", "pw"), (" pw ", " pw ")]:
        path.write_text(content, newline="")
        assert read_password_file(path) == password


def test_main_reports_bad_arguments_without_a_traceback(
    password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file.chmod(0o644)
    assert main(lxc_argv(password_file)) == 2
    err = capsys.readouterr().err
    assert err.startswith("updater.lab.bmc: error: password file")
    assert "Traceback" not in err
