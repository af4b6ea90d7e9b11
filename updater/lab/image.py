"""Node images: build with debootstrap, derive without it, store by SHA-256 under /var/lib/corral-lab/images.

An image is a canonical tar (members sorted by name, every mtime fixed, numeric owners, no device nodes) whose
SHA-256 is its identity. The store keeps ``<id>.tar`` (the artifact update bundles carry) next to
``<id>/rootfs`` (the same tree unpacked, used read-only as the lower layer of every node's overlay root),
and a cache index ``keys/<cache key>`` so that the same package union and recipe never build
twice. A build or derivation happens in a private temporary directory and is published by rename at the very
end: a failure leaves nothing in the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from updater.lab import node_files, release
from updater.lab.errors import LabError
from updater.lab.host import run, unmount_tree
from updater.lab.packages import PackageSet

DEFAULT_STORE = Path("/var/lib/corral-lab/images")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Bump when the recipe changes in a way node_files does not show (it is part of every image's cache key).
RECIPE_REVISION = "3"
CANONICAL_MTIME = 0  # every member's mtime in the artifact: the id depends on content, not on build time

# Per-machine, device-specific or build-time-only paths that never go into an image.
_SCRUB = (
    "etc/ssh/ssh_host_*",
    "etc/hostname",
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/lib/apt/lists/*",
    "var/log/*.log",
    "var/log/apt/*",
    "var/cache/debconf/*-old",
    "tmp/*",
    "var/tmp/*",
    "dev/*",
    "usr/sbin/policy-rc.d",
    "root/.bash_history",
)


# Units that only fail or do harm on a stateless container node (no hardware clock, no way out, no NVMe).
_MASKED = (
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_reap.service",
    "nvmf-autoconnect.service",
)


@dataclass(frozen=True)
class Image:
    id: str
    store: Path
    release: release.Release

    @property
    def artifact(self) -> Path:
        return self.store / f"{self.id}.tar"

    @property
    def rootfs(self) -> Path:
        return self.store / self.id / "rootfs"


def recipe_sha256() -> str:
    parts = [RECIPE_REVISION, SUITE, MIRROR, "minbase", *_MASKED, *_SCRUB]
    parts += [
        f"{path}:{mode:o}:{content}" for path, (content, mode) in sorted(node_files.image_files().items())
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_key(packages: PackageSet, version: str) -> str:
    return hashlib.sha256(f"{version}\0{packages.sha256}\0{recipe_sha256()}".encode()).hexdigest()


class ImageStore:
    """The host's image cache, shared by every lab."""

    def __init__(self, root: Path = DEFAULT_STORE) -> None:
        self.root = root

    # --- reading -------------------------------------------------------------------------------------------
    def get(self, image_id: str) -> Image:
        rel = self.root / image_id / "rootfs" / "etc" / "corral-release"
        if len(image_id) != 64 or not (self.root / f"{image_id}.tar").is_file() or not rel.is_file():
            raise LabError(f"no node image {image_id!r} in {self.root} (see `corral-lab image list`)")
        return Image(image_id, self.root, release.parse(rel.read_text(encoding="utf-8")))

    def images(self) -> list[Image]:
        if not self.root.is_dir():
            return []
        images = []
        for tar in sorted(self.root.glob("*.tar")):
            with contextlib.suppress(LabError, ValueError):
                images.append(self.get(tar.stem))
        return images

    def cached(self, key: str) -> Image | None:
        index = self.root / "keys" / key
        if not index.is_file():
            return None
        try:
            return self.get(index.read_text(encoding="utf-8").strip())
        except LabError:
            return None

    # --- writing -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # builds queue up: the second one then finds the first's image
            yield

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[Path]:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            yield work
        finally:
            unmount_tree(str(work))
            shutil.rmtree(work, ignore_errors=True)

    def ensure(self, packages: PackageSet, version: str, log: bool = True) -> tuple[Image, bool]:
        """The image for this package union and recipe: from the cache, else built now. (image, built)."""
        key = cache_key(packages, version)
        with self._locked():
            hit = self.cached(key)
            if hit is not None:
                return hit, False
            check_packages_exist(packages)
            with self._workdir() as work:
                rootfs = work / "rootfs"
                _debootstrap(rootfs, packages, self.root / "debs", log)
                rel = release.Release(
                    version=version,
                    build_date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    packages_sha256=packages.sha256,
                    recipe_sha256=recipe_sha256(),
                )
                _finish_rootfs(rootfs, rel)
                image = self._publish(work, rootfs, {"packages": list(packages.union), "key": key})
            (self.root / "keys").mkdir(exist_ok=True)
            _atomic_write(self.root / "keys" / key, image.id + "\n")
            return image, True

    def derive(
        self,
        base_id: str,
        version: str,
        files: Mapping[str, str] | None = None,
        note: str = "",
    ) -> Image:
        """A new image from ``base_id`` with a new version and some files changed: no debootstrap.

        The base tree is hard-linked (nothing in a store tree is ever written in place), changed files are
        written as new inodes, and the result is packed and published like a built image.
        """
        base = self.get(base_id)
        for path in files or {}:
            if not path.startswith("/") or ".." in Path(path).parts or path == "/etc/corral-release":
                raise LabError(
                    f"derive: {path!r} must be an absolute path inside the image (not corral-release)"
                )
        with self._locked(), self._workdir() as work:
            rootfs = work / "rootfs"
            run(["cp", "-al", str(base.rootfs), str(rootfs)])
            for path, content in (files or {}).items():
                _replace_file(rootfs / path.lstrip("/"), content)
            rel = release.Release(
                version=version,
                build_date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                packages_sha256=base.release.packages_sha256,
                recipe_sha256=base.release.recipe_sha256,
                base_image=base.id,
                note=note,
            )
            _replace_file(rootfs / "etc" / "corral-release", rel.render())
            return self._publish(work, rootfs, {"derived_from": base.id, "changed": sorted(files or {})})

    def import_artifact(self, tar_path: Path, expected_id: str | None = None) -> Image:
        """Add an artifact (e.g. from an update bundle) to the store; its SHA-256 must be ``expected_id``."""
        actual = sha256_file(tar_path)
        if expected_id is not None and actual != expected_id:
            raise LabError(f"image artifact {tar_path}: SHA-256 is {actual}, expected {expected_id}")
        with self._locked():
            if (self.root / f"{actual}.tar").is_file() and (self.root / actual / "rootfs").is_dir():
                return self.get(actual)
            with self._workdir() as work:
                rootfs = work / "rootfs"
                rootfs.mkdir()
                run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tar_path)])
                if not (rootfs / "etc" / "corral-release").is_file():
                    raise LabError(f"{tar_path}: not a Corral node image (no /etc/corral-release)")
                shutil.copyfile(tar_path, work / "artifact.tar")
                return self._move_into_store(work, rootfs, actual, {"imported_from": str(tar_path)})

    def in_use(self) -> set[str]:
        """Images some lab on this host boots or points at (labs live next to the store)."""
        used = set()
        for pointer in self.root.parent.glob("*/nodes/*/boot/*"):
            with contextlib.suppress(OSError):
                used.add(pointer.read_text(encoding="ascii").strip())
        for config in self.root.parent.glob("*/lab.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                used.add(str(json.loads(config.read_text(encoding="utf-8"))["image"]))
        return used

    def prune(self, keep: set[str]) -> list[str]:
        """Remove every image no lab uses and not in ``keep``; returns the removed ids."""
        removed = []
        for image in self.images():
            if image.id not in keep and image.id not in self.in_use():
                self.remove(image.id)
                removed.append(image.id)
        return removed

    def remove(self, image_id: str) -> None:
        with self._locked():
            (self.root / f"{image_id}.tar").unlink(missing_ok=True)
            shutil.rmtree(self.root / image_id, ignore_errors=True)
            for index in (self.root / "keys").glob("*") if (self.root / "keys").is_dir() else []:
                if index.read_text(encoding="utf-8").strip() == image_id:
                    index.unlink()

    def _publish(self, work: Path, rootfs: Path, meta: dict[str, object]) -> Image:
        artifact = work / "artifact.tar"
        pack_canonical(rootfs, artifact)
        return self._move_into_store(work, rootfs, sha256_file(artifact), meta)

    def _move_into_store(self, work: Path, rootfs: Path, image_id: str, meta: dict[str, object]) -> Image:
        final_dir = self.root / image_id
        if (self.root / f"{image_id}.tar").is_file() and final_dir.is_dir():
            return self.get(image_id)  # the same bytes already exist (e.g. a derivation repeated)
        shutil.rmtree(final_dir, ignore_errors=True)
        staged = work / "published"
        staged.mkdir()
        rootfs.rename(staged / "rootfs")
        _atomic_write(staged / "meta.json", json.dumps({"id": image_id, **meta}, indent=2) + "\n")
        staged.rename(final_dir)
        (work / "artifact.tar").rename(
            self.root / f"{image_id}.tar"
        )  # the artifact last: it marks "complete"
        return self.get(image_id)


# --- recipe steps -------------------------------------------------------------------------------------------
def check_packages_exist(packages: PackageSet) -> None:
    """Fail before any download when a declared package is unknown to apt (and say which role declared it)."""
    result = run(["apt-cache", "policy", *packages.union], env={"LC_ALL": "C", "PATH": os.environ["PATH"]})
    known = {
        line[:-1]
        for line in result.stdout.splitlines()
        if line and not line[0].isspace() and line.endswith(":")
    }
    missing = [p for p in packages.union if p not in known]
    if missing:
        raise LabError(_unknown_packages_message(packages, missing))


def _unknown_packages_message(packages: PackageSet, missing: list[str]) -> str:
    where = "; ".join(f"{p} (declared by {', '.join(packages.origin(p))})" for p in missing)
    return f"image build: unknown Debian package(s): {where}. Nothing was built or cached."


def _debootstrap(rootfs: Path, packages: PackageSet, debs: Path, log: bool) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    base = ",".join(sorted(set(packages.sources.get("base", ()))))
    started = time.monotonic()
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={base}",
            f"--cache-dir={debs}",
            SUITE,
            str(rootfs),
            MIRROR,
        ],
        timeout=1800,
    )
    if log:
        print(f"image: debootstrap done in {time.monotonic() - started:.0f}s", flush=True)
    rest = [p for p in packages.union if p not in packages.sources.get("base", ())]
    _write(rootfs / "usr/sbin/policy-rc.d", node_files.POLICY_RC_D, 0o755)
    for fs, target, opts in (("proc", "proc", []), ("sysfs", "sys", ["-o", "ro"])):
        run(["mount", "-t", fs, fs, str(rootfs / target), *opts])
    run(["mount", "--bind", str(debs), str(rootfs / "var/cache/apt/archives")])
    try:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        run(["chroot", str(rootfs), "apt-get", "update", "-qq"], env=env, timeout=600)
        if rest:
            result = run(
                ["chroot", str(rootfs), "apt-get", "install", "-y", "-qq", "--no-install-recommends", *rest],
                env=env,
                timeout=1800,
                check=False,
            )
            if result.returncode != 0:
                unknown = [p for p in rest if f"Unable to locate package {p}" in result.stderr]
                if unknown:
                    raise LabError(_unknown_packages_message(packages, unknown))
                raise LabError(f"image build: apt-get install failed: {result.stderr.strip()[-2000:]}")
        if log:
            print(f"image: packages installed after {time.monotonic() - started:.0f}s", flush=True)
    finally:
        unmount_tree(str(rootfs))


def _finish_rootfs(rootfs: Path, rel: release.Release) -> None:
    for inside, (content, mode) in node_files.image_files().items():
        _write(rootfs / inside.lstrip("/"), content, mode)
    wants = rootfs / "etc/systemd/system/local-fs.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "corral-persist.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/usr/lib/systemd/system/corral-persist.service")
    for pattern in _SCRUB:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # machine-id: a link into the state volume, so a node keeps its identity across reboots and images.
    (rootfs / "etc/machine-id").symlink_to(f"{node_files.PERSIST_STORE}/machine-id")
    (rootfs / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    _write(rootfs / "etc/resolv.conf", "# the lab has no DNS: nodes use /etc/hosts\n", 0o644)
    for unit in _MASKED:
        mask = rootfs / "etc/systemd/system" / unit
        if not mask.exists():
            mask.symlink_to("/dev/null")
    _write(rootfs / "etc/corral-release", rel.render(), 0o644)


def pack_canonical(rootfs: Path, artifact: Path) -> None:
    """GNU tar, reproducible: sorted names, fixed mtime, numeric owners, no atime/ctime, no sockets."""
    run(
        [
            "tar",
            "--sort=name",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            f"--mtime=@{CANONICAL_MTIME}",
            "--numeric-owner",
            "--no-acls",
            "--no-selinux",
            "--no-xattrs",
            "-C",
            str(rootfs),
            "-cf",
            str(artifact),
            ".",
        ]
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)


def _replace_file(path: Path, content: str) -> None:
    """Write a new inode (never through a hard link shared with another image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    tmp = path.with_name(f".{path.name}.corral-new")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(mode)
    tmp.rename(path)


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
