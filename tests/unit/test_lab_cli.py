"""corral-lab refuses bad input with one clear line and exit 1, before it makes anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "updater.cli.lab"]


def _cli(root: Path, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        [*prefix, *CLI, "--root", str(root), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("nodes", ["0", "100", "-3"])
def test_up_with_a_node_count_outside_1_to_12_is_refused_and_makes_nothing(
    tmp_path: Path, nodes: str
) -> None:
    result = _cli(tmp_path, "--lab", "badnodes", "up", "--nodes", nodes)
    assert result.returncode == 1
    assert result.stderr.strip() == f"corral-lab: error: --nodes {nodes}: a lab has 1 to 12 nodes"
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_up_as_a_non_root_user_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    result = _cli(tmp_path / "labs", "--lab", "notroot", "up", "--nodes", "1", user="65534")
    assert result.returncode == 1
    assert "must run as root" in result.stderr
    assert not (tmp_path / "labs").exists()


def test_a_bad_lab_name_is_refused(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--lab", "Bad-Name", "status")
    assert result.returncode == 1
    assert "lab name 'Bad-Name'" in result.stderr


def test_commands_on_a_lab_that_does_not_exist_say_how_to_make_it(tmp_path: Path) -> None:
    for args in (["status"], ["power", "node1", "status"], ["boots"], ["inventory"]):
        result = _cli(tmp_path, "--lab", "nolab", *args)
        assert result.returncode == 1, args
        assert "no lab named 'nolab' (start it with `corral-lab up --lab nolab`)" in result.stderr


def test_down_of_a_lab_that_does_not_exist_is_a_no_op(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--lab", "nolab", "down")
    assert result.returncode == 0
    assert "nothing to remove" in result.stdout


def test_derive_from_an_unknown_image_is_refused(tmp_path: Path) -> None:
    result = _cli(tmp_path, "image", "derive", "--from", "f" * 64, "--version", "2")
    assert result.returncode == 1
    assert "no node image" in result.stderr


def test_import_then_derive_through_the_cli_prints_the_new_image_id(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/corral-release").write_text(
        "CORRAL_VERSION=1\nCORRAL_BUILD_DATE=x\nCORRAL_PACKAGES_SHA256=p\nCORRAL_RECIPE_SHA256=r\n"
    )
    artifact = tmp_path / "image.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(artifact), "."], check=True)
    imported = _cli(tmp_path / "labs", "image", "import", str(artifact))
    assert imported.returncode == 0, imported.stderr
    base = imported.stdout.strip()
    (tmp_path / "motd").write_text("derived\n")
    derived = _cli(
        tmp_path / "labs",
        "image",
        "derive",
        "--from",
        base,
        "--version",
        "2",
        "--file",
        f"/etc/motd={tmp_path}/motd",
    )
    assert derived.returncode == 0, derived.stderr
    new = derived.stdout.strip()
    assert len(new) == 64
    assert new != base
    assert (tmp_path / f"labs/images/{new}/rootfs/etc/motd").read_text() == "derived\n"
    listed = _cli(tmp_path / "labs", "image", "list").stdout
    assert f"{new}  version 2" in listed


def test_derive_with_a_malformed_file_option_is_refused(tmp_path: Path) -> None:
    result = _cli(tmp_path, "image", "derive", "--from", "f" * 64, "--version", "2", "--file", "/etc/motd")
    assert result.returncode == 1
    assert "--file '/etc/motd': use PATH=LOCALFILE" in result.stderr


def test_the_lab_may_be_named_after_the_command_too(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--lab", "first", "status", "--lab", "second")
    assert result.returncode == 1
    assert "no lab named 'second'" in result.stderr
