"""Builders for bundle tests: a real vendor directory, real artifacts, real signed bundles (no mocks).

Shared by tests/unit/test_bundle_*.py, test_staging*.py, test_license*.py, test_keyring*.py and the verify
benchmark. Everything is written under a pytest tmp_path.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from updater.domain.keyring import TrustStore
from updater.domain.license import License, parse_entitlement_key
from updater.services.bundles import reader
from updater.services.vendor import keys as vendor
from updater.services.vendor import writer

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
RELEASE_DATE = date(2026, 11, 1)


@dataclass
class Kit:
    root: Path
    vendor_dir: Path

    @property
    def vendor(self) -> vendor.VendorDir:
        return vendor.VendorDir(self.vendor_dir)

    def trust(self, now: datetime = NOW) -> TrustStore:
        return TrustStore.load(self.vendor.trust_root.read_bytes(), self.vendor.keyring.read_bytes(), now=now)


def make_kit(tmp: Path, *, release_keys: int = 3, release_threshold: int = 2) -> Kit:
    vendor_dir = tmp / "vendor"
    vendor.init_vendor(
        vendor_dir,
        now=NOW,
        root_keys=3,
        root_threshold=2,
        release_keys=release_keys,
        release_threshold=release_threshold,
    )
    return Kit(tmp, vendor_dir)


def write_image_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A canonical node-image-like tar (fixed owner, mtime, order), as the lab's image build writes."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def image_members(version: str, *, files: int = 20, size: int = 3000) -> dict[str, bytes]:
    """Mostly stable content plus a version file, so two versions share most blocks."""
    members = {f"usr/lib/corral/file{i:03d}": bytes([i % 251]) * (size + i) for i in range(files)}
    members["etc/corral-release"] = f"VERSION={version}\n".encode()
    return members


@dataclass
class Artifacts:
    image: Path
    collection: Path
    service: Path
    notes: Path


def make_artifacts(
    directory: Path, version: str, *, image: Path | None = None, service: Path | None = None
) -> Artifacts:
    """Artifacts of one release; ``service`` is a real wheel (:func:`build_service_wheel`), else a stand-in
    file that only the bundle checks read."""
    directory.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = write_image_tar(directory / f"image-{version}.tar", image_members(version))
    collection = directory / f"corral-cloud-{version}.tar.gz"
    collection.write_bytes(b"collection tarball " + version.encode() * 50)
    if service is None:
        service = directory / f"corral_updater-{version}-py3-none-any.whl"
        service.write_bytes(b"wheel " + version.encode() * 40)
    notes = directory / "RELEASE-NOTES.md"
    notes.write_text(f"# Corral {version}\n\nFixes and improvements.\n")
    return Artifacts(image, collection, service, notes)


def build_bundle(
    kit: Kit,
    version: str = "1.3.0",
    *,
    upgrade_from: str = ">=1.2.0, <1.3.0",
    channel: str = "stable",
    release_date: date = RELEASE_DATE,
    artifacts: Artifacts | None = None,
    delta_base: Path | None = None,
    sign: bool = True,
    keyids: list[str] | None = None,
    carry_keyring: bool = False,
    name: str | None = None,
) -> Path:
    artifacts = artifacts or make_artifacts(kit.root / f"artifacts-{version}", version)
    out = kit.root / (name or f"corral-{version}.bundle")
    writer.build_bundle(
        out,
        version=version,
        channel=channel,
        release_date=release_date,
        upgrade_from=upgrade_from,
        image=artifacts.image,
        collection=artifacts.collection,
        service_package=artifacts.service,
        notes=artifacts.notes,
        delta_base=delta_base,
        keyring=kit.vendor.keyring.read_bytes() if carry_keyring else None,
    )
    if sign:
        head = reader.read_head(out)
        signatures = vendor.sign_manifest(kit.vendor_dir, head.manifest_bytes, now=NOW, keyids=keyids)
        writer.rewrite_head(out, signatures, head.keyring)
    return out


ADDITIVE_MIGRATION = 'op.create_table("selftest_{revision}", sa.Column("id", sa.Integer, primary_key=True))'


def build_service_wheel(
    out_dir: Path,
    version: str,
    *,
    migration: str | None = None,
    migration_body: str = ADDITIVE_MIGRATION,
    patch: Callable[[Path], None] | None = None,
) -> Path:
    """A real wheel of this repository's ``updater`` at ``version``, built offline from a copy of the tree
    (the repository's own pyproject is never edited). ``migration`` adds an Alembic migration with that
    revision id on top of the current head whose upgrade is ``migration_body`` (by default it creates a
    table ``selftest_<revision>``: an additive change a newer release could make). ``patch`` may change the
    copied tree (its root is passed) before the build."""
    from alembic.script import ScriptDirectory

    from updater.store.db import MIGRATIONS_DIR

    tree = out_dir / f"src-{version}"
    shutil.copytree(REPO / "updater", tree / "updater", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "README.md", tree / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(
        re.sub(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject, count=1)
    )
    init = tree / "updater" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))
    if migration is not None:
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        (tree / "updater" / "store" / "migrations" / "versions" / f"{migration}.py").write_text(
            f'''"""selftest: a table added by a newer service release."""

import sqlalchemy as sa
from alembic import op

revision = "{migration}"
down_revision = "{head}"


def upgrade() -> None:
    {migration_body.format(revision=migration)}


def downgrade() -> None:
    op.drop_table("selftest_{migration}")
'''
        )
    if patch is not None:
        patch(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "--disable-pip-version-check", "--quiet", "--wheel-dir", str(out_dir), str(tree),
        ],
        check=True, capture_output=True, env=env, cwd=out_dir,
    )  # fmt: skip
    shutil.rmtree(tree)
    wheels = sorted(out_dir.glob(f"corral_updater-{version}-*.whl"))
    assert len(wheels) == 1, f"expected one wheel for {version}, found {wheels}"
    return wheels[0]


@dataclass
class IssuedLicense:
    license: License
    document: bytes
    key: bytes
    license_path: Path
    key_path: Path


def issue(
    kit: Kit,
    *,
    channels: tuple[str, ...] = ("stable",),
    nodes: int = 5,
    updates_until: date = date(2027, 11, 1),
    expires: date = date(2028, 1, 1),
    now: datetime = NOW,
    license_id: str | None = None,
) -> IssuedLicense:
    lic, license_path, key_path = vendor.issue_license(
        kit.vendor_dir,
        kit.root / "licenses",
        now=now,
        customer="ACME Corp",
        channels=list(channels),
        node_entitlement=nodes,
        updates_until=updates_until,
        expires=expires,
        license_id=license_id,
    )
    return IssuedLicense(
        lic, license_path.read_bytes(), parse_entitlement_key(key_path.read_text()), license_path, key_path
    )


# --- crafting hostile bundles ----------------------------------------------------------------------------


def read_members(bundle: Path) -> list[tuple[str, bytes]]:
    """The members of a (valid, plain) bundle in stored order, read with the standard library."""
    with tarfile.open(bundle, "r:") as tar:
        result = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            result.append((info.name, handle.read()))
        return result


def regular(name: str, data: bytes) -> bytes:
    from updater.domain.tarformat import build_header, padded

    return build_header(name, len(data)) + data + b"\0" * (padded(len(data)) - len(data))


def special(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A member of any type, as tarfile writes it in ustar format."""
    info.size = len(data)
    block = info.tobuf(format=tarfile.USTAR_FORMAT)
    pad = (512 - len(data) % 512) % 512
    return block + data + b"\0" * pad


def write_raw(path: Path, blocks: list[bytes], *, end: bool = True) -> Path:
    path.write_bytes(b"".join(blocks) + (b"\0" * 1024 if end else b""))
    return path


def rebuild(path: Path, members: list[tuple[str, bytes]], *, extra: list[bytes] | None = None) -> Path:
    """Write members (name, data) as regular files, then any extra raw blocks, then the end marker."""
    return write_raw(path, [regular(n, d) for n, d in members] + (extra or []))
