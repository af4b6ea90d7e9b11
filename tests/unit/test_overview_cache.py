"""What every status request would otherwise recompute is kept until it changes: the inventory (an
``ansible-inventory`` run) until a file it reads changes, the verified license until a trust file changes or
the time leaves its validity. A kept result is never served after its source changed or expired.

The inventory tests run a stand-in ``ansible-inventory`` (a shell script that prints its ``-i`` file and
counts its runs): what is under test is when it runs, not Ansible's parsing, which
``test_web.py::test_overview_reads_an_ansible_inventory_file_through_ansible_inventory`` covers for real.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit import bundle_kit as kit_
from tests.unit.bundle_kit import NOW, Kit
from updater.domain import license as license_domain
from updater.domain.errors import KeyringExpired, LicenseExpired, LicenseNotYetValid, LicenseSignatureInvalid
from updater.domain.inventory import InventoryError
from updater.services.cluster import inventory
from updater.services.installation import overview
from updater.services.installation.trust import KEYRING_FILE, LICENSE_FILE, TRUST_ROOT_FILE


def hosts(*names: str) -> str:
    return json.dumps({"nodes": {"hosts": list(names)}, "_meta": {"hostvars": {}}})


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ansible-inventory: prints the file given with -i (or a directory's hosts.json), appends a
    line to the returned file on every run."""
    log = tmp_path / "runs.log"
    log.touch()
    script = tmp_path / "ansible-inventory"
    script.write_text(
        f'#!/bin/sh\necho run >> {log}\nif [ -d "$2" ]; then cat "$2/hosts.json"; else cat "$2"; fi\n'
    )
    script.chmod(0o755)
    monkeypatch.setattr(inventory, "_ansible_inventory", lambda: str(script))
    return log


def run_count(log: Path) -> int:
    return len(log.read_text().splitlines())


def names(path: Path) -> list[str]:
    return [node.name for node in overview.load_inventory(str(path)).nodes]


def test_an_unchanged_inventory_is_read_by_ansible_inventory_once(tmp_path: Path, runs: Path) -> None:
    source = tmp_path / "hosts.yml"
    source.write_text(hosts("n1", "n2", "n3"))
    for _ in range(5):
        assert names(source) == ["n1", "n2", "n3"]
    assert run_count(runs) == 1


def test_an_inventory_rewritten_with_the_same_size_at_once_is_read_again(tmp_path: Path, runs: Path) -> None:
    """Same size, same inode, within one tick of the file clock: only the content tells."""
    source = tmp_path / "hosts.yml"
    source.write_text(hosts("n1", "n2", "n3"))
    assert names(source) == ["n1", "n2", "n3"]
    stat = source.stat()
    with source.open("r+") as handle:
        handle.write(hosts("n1", "n2", "n4"))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert names(source) == ["n1", "n2", "n4"]
    assert run_count(runs) == 2


def test_a_new_group_vars_file_beside_the_inventory_is_a_change(tmp_path: Path, runs: Path) -> None:
    source = tmp_path / "hosts.yml"
    source.write_text(hosts("n1", "n2", "n3"))
    names(source)
    names(source)
    (tmp_path / "group_vars").mkdir()
    names(source)
    (tmp_path / "group_vars" / "nodes.yml").write_text("corral_site: east\n")
    names(source)
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "n1.yml").write_text("corral_rack: r1\n")
    names(source)
    names(source)
    assert run_count(runs) == 4


def test_a_file_added_anywhere_under_an_inventory_directory_is_a_change(tmp_path: Path, runs: Path) -> None:
    directory = tmp_path / "inventory"
    (directory / "group_vars" / "all").mkdir(parents=True)
    (directory / "hosts.json").write_text(hosts("n1", "n2", "n3"))
    assert names(directory) == ["n1", "n2", "n3"]
    assert names(directory) == ["n1", "n2", "n3"]
    (directory / "group_vars" / "all" / "site.yml").write_text("corral_site: east\n")
    names(directory)
    (directory / "hosts.json").write_text(hosts("n1", "n2", "n3", "n4"))
    assert names(directory) == ["n1", "n2", "n3", "n4"]
    assert run_count(runs) == 3


def test_an_inventory_that_cannot_be_read_is_not_kept(tmp_path: Path, runs: Path) -> None:
    source = tmp_path / "hosts.yml"
    source.write_text("not json at all")
    for _ in range(2):
        with pytest.raises(InventoryError, match="not JSON"):
            names(source)
    assert run_count(runs) == 2
    source.write_text(hosts("n1", "n2", "n3"))
    assert names(source) == ["n1", "n2", "n3"]


# --- the license ----------------------------------------------------------------------------------------


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return kit_.make_kit(tmp_path / "vendor-side")


def install(kit: Kit, trust_dir: Path, **license_fields: object) -> kit_.IssuedLicense:
    issued = kit_.issue(kit, **license_fields)  # type: ignore[arg-type]
    trust_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(kit.vendor.trust_root, trust_dir / TRUST_ROOT_FILE)
    shutil.copy(kit.vendor.keyring, trust_dir / KEYRING_FILE)
    (trust_dir / LICENSE_FILE).write_bytes(issued.document)
    return issued


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    seen: list[datetime] = []
    real = license_domain.verify_license

    def counting(document: bytes, keyring: object, *, now: datetime) -> object:
        seen.append(now)
        return real(document, keyring, now=now)  # type: ignore[arg-type]

    monkeypatch.setattr(overview, "verify_license", counting)
    return seen


def test_an_unchanged_license_is_verified_once(
    kit: Kit, tmp_path: Path, verifications: list[datetime]
) -> None:
    trust = tmp_path / "trust"
    install(kit, trust, license_id="lic-a")
    for minutes in range(5):
        summary = overview.load_license(trust, now=NOW + timedelta(minutes=minutes))
        assert summary is not None
        assert summary.license_id == "lic-a"
    assert len(verifications) == 1


def test_a_replaced_license_is_seen_at_once(kit: Kit, tmp_path: Path, verifications: list[datetime]) -> None:
    trust = tmp_path / "trust"
    install(kit, trust, license_id="lic-a")
    assert overview.load_license(trust, now=NOW).license_id == "lic-a"  # type: ignore[union-attr]
    install(kit, trust, license_id="lic-b")
    assert overview.load_license(trust, now=NOW).license_id == "lic-b"  # type: ignore[union-attr]
    (trust / LICENSE_FILE).unlink()
    assert overview.load_license(trust, now=NOW) is None


def test_a_tampered_license_is_refused_although_the_genuine_one_was_kept(kit: Kit, tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    install(kit, trust, license_id="lic-a")
    assert overview.load_license(trust, now=NOW) is not None
    genuine = json.loads((trust / LICENSE_FILE).read_bytes())
    other = json.loads(kit_.issue(kit, license_id="lic-b").document)
    (trust / LICENSE_FILE).write_text(json.dumps({**genuine, "signatures": other["signatures"]}))
    with pytest.raises(LicenseSignatureInvalid):
        overview.load_license(trust, now=NOW)


def test_license_expiry_is_seen_the_day_after_its_last_day(
    kit: Kit, tmp_path: Path, verifications: list[datetime]
) -> None:
    trust = tmp_path / "trust"
    install(kit, trust, expires=date(2026, 12, 31), updates_until=date(2026, 12, 1))
    last_day = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert overview.load_license(trust, now=NOW) is not None
    assert overview.load_license(trust, now=last_day) is not None
    assert len(verifications) == 1
    with pytest.raises(LicenseExpired):
        overview.load_license(trust, now=last_day + timedelta(minutes=1))


def test_a_license_is_not_served_from_before_its_issue_day(kit: Kit, tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    install(kit, trust)
    assert overview.load_license(trust, now=NOW) is not None
    with pytest.raises(LicenseNotYetValid):
        overview.load_license(trust, now=NOW - timedelta(days=1))


def test_the_keyrings_expiry_is_seen_though_the_license_runs_longer(kit: Kit, tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    install(kit, trust)
    keyring_expires = kit.trust().keyring.expires  # a year after NOW; the license runs to 2028
    assert overview.load_license(trust, now=keyring_expires - timedelta(seconds=1)) is not None
    with pytest.raises(KeyringExpired):
        overview.load_license(trust, now=keyring_expires)
