"""The image's package list: base plus every role's declared list; its hash is part of the image identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from updater.lab.errors import LabError
from updater.lab.packages import BASE_PACKAGES, collect, parse_role_packages

ROOT = Path(__file__).resolve().parents[2]


def _role(tmp_path: Path, role: str, text: str) -> None:
    path = tmp_path / role / "vars" / "packages.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_the_union_holds_base_and_every_role_list_sorted_without_duplicates(tmp_path: Path) -> None:
    _role(tmp_path, "alpha", "---\nalpha_packages:\n  - zookeeper\n  - python3\n")
    _role(tmp_path, "beta", "beta_packages: [haproxy]\n")
    packages = collect(tmp_path)
    assert set(packages.union) == set(BASE_PACKAGES) | {"zookeeper", "haproxy"}
    assert list(packages.union) == sorted(packages.union)
    assert packages.origin("python3") == ["alpha", "base"]


def test_the_hash_changes_with_the_list_and_only_with_it(tmp_path: Path) -> None:
    _role(tmp_path, "alpha", "alpha_packages: [zookeeper]\n")
    first = collect(tmp_path).sha256
    assert collect(tmp_path).sha256 == first
    assert collect(tmp_path, ("haproxy",)).sha256 != first


def test_the_repository_roles_declare_what_later_roles_need() -> None:
    union = collect(ROOT / "roles").union
    for needed in ("systemd", "openssh-server", "python3", "udev"):
        assert needed in union


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("other: [x]\n", "must define a list named `gamma_packages`"),
        ("gamma_packages: zookeeper\n", "must be a list of package names"),
        ("gamma_packages: [Bad_Name]\n", "is not a Debian package name"),
        ("gamma_packages: [x\n", "not valid YAML"),
    ],
)
def test_a_malformed_role_list_is_refused_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(LabError, match=r"roles/gamma/vars/packages\.yml") as excinfo:
        parse_role_packages("gamma", text)
    assert message in str(excinfo.value)
