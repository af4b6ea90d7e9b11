"""Which Debian packages the node image holds: the base list plus every role's ``<role>_packages`` list.

Each role declares its packages in ``roles/<role>/vars/packages.yml`` as a list named ``<role>_packages``;
the image installs the union. The union (sorted, de-duplicated) is part of the image's identity.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from updater.lab.errors import LabError

# What every node needs before any role: init, the way in, the Ansible runtime, device handling.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "udev",
    "iproute2",
    "iputils-ping",
    "procps",
    "kmod",
    "less",
)

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class PackageSet:
    """The packages of one image and where each came from (``base`` or a role name)."""

    sources: dict[str, tuple[str, ...]]

    @property
    def union(self) -> tuple[str, ...]:
        return tuple(sorted({p for pkgs in self.sources.values() for p in pkgs}))

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.union).encode()).hexdigest()

    def origin(self, package: str) -> list[str]:
        return sorted(src for src, pkgs in self.sources.items() if package in pkgs)


def parse_role_packages(role: str, text: str) -> tuple[str, ...]:
    """The ``<role>_packages`` list of one ``vars/packages.yml``; anything else is a clear error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(f"roles/{role}/vars/packages.yml: not valid YAML: {exc}") from exc
    key = f"{role}_packages"
    if not isinstance(data, dict) or key not in data:
        raise LabError(f"roles/{role}/vars/packages.yml: must define a list named `{key}`")
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise LabError(f"roles/{role}/vars/packages.yml: `{key}` must be a list of package names")
    for name in value:
        if not _PACKAGE_NAME.match(name):
            raise LabError(f"roles/{role}/vars/packages.yml: `{name}` is not a Debian package name")
    return tuple(value)


def collect(roles_dir: Path, extra: tuple[str, ...] = ()) -> PackageSet:
    """Base packages + every role's declared packages (+ ``extra``, e.g. for a test image)."""
    sources: dict[str, tuple[str, ...]] = {"base": BASE_PACKAGES}
    for path in sorted(roles_dir.glob("*/vars/packages.yml")):
        role = path.parent.parent.name
        sources[role] = parse_role_packages(role, path.read_text(encoding="utf-8"))
    if extra:
        for name in extra:
            if not _PACKAGE_NAME.match(name):
                raise LabError(f"`{name}` is not a Debian package name")
        sources["extra"] = tuple(extra)
    return PackageSet(sources)
