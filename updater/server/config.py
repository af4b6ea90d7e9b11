"""The update server's home directory: its settings, its channels and its license registry.

Layout::

    server.json              channels and metadata expiry (written by `corral-update-server init`)
    keys/<role>.pem          TUF signing keys, mode 0600 (root and targets belong offline in production)
    trust/trust-root.json    the vendor's root of trust for licenses (public; from `corral-bundle keys init`)
    trust/keyring.json       the vendor keyring it signs (public); licenses are verified against it
    channels/<channel>/      one TUF repository per channel (see repository.py)
    licenses/<id>.json       license registry (see licenses.py)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from updater.domain.keyring import TrustStore
from updater.server.licenses import LicenseRegistry
from updater.server.repository import ChannelRepository, ExpiryPolicy, RoleKeys

CONFIG_FILE = "server.json"
_CHANNEL = re.compile(r"[a-z][a-z0-9-]{0,31}")


class ConfigError(Exception):
    """The server home is missing or inconsistent; the message says what to do."""


def validate_channel_name(name: str) -> str:
    if not _CHANNEL.fullmatch(name):
        raise ConfigError(f"channel name {name!r} must be lower-case letters, digits and '-' (max 32)")
    return name


@dataclass(frozen=True)
class ServerHome:
    path: Path
    channels: tuple[str, ...]
    expiry: ExpiryPolicy

    @classmethod
    def load(cls, path: Path) -> ServerHome:
        config_path = path / CONFIG_FILE
        try:
            data = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path} is not an update server home (run `corral-update-server init`)"
            ) from None
        channels = tuple(validate_channel_name(c) for c in data["channels"])
        return cls(path=path, channels=channels, expiry=ExpiryPolicy.from_dict(data["expiry_seconds"]))

    def save(self) -> None:
        data = {"channels": list(self.channels), "expiry_seconds": self.expiry.to_dict()}
        (self.path / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")

    def channel_dir(self, channel: str) -> Path:
        return self.path / "channels" / channel

    def keys(self) -> RoleKeys:
        return RoleKeys.load(self.path / "keys")

    def repository(self, channel: str) -> ChannelRepository:
        if channel not in self.channels:
            raise ConfigError(f"no channel {channel!r} on this server (channels: {', '.join(self.channels)})")
        return ChannelRepository(self.channel_dir(channel), self.keys(), self.expiry)

    def licenses(self) -> LicenseRegistry:
        return LicenseRegistry(self.path / "licenses")

    @property
    def trust_root_path(self) -> Path:
        return self.path / "trust" / "trust-root.json"

    @property
    def keyring_path(self) -> Path:
        return self.path / "trust" / "keyring.json"

    def trust(self, *, now: datetime) -> TrustStore:
        """The vendor trust root and keyring, re-verified (part A's TrustStore)."""
        return TrustStore.load(self.trust_root_path.read_bytes(), self.keyring_path.read_bytes(), now=now)
