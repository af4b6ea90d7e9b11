"""The installation's update channel, from its home: settings for the channel client, the verified license
and trust it downloads under, and the checks ``corral-updater init`` runs before it writes any of them.

Everything comes from files ``init`` put in the home (``trust/``: trust root, keyring, license and entitlement
key, read through :mod:`updater.services.installation.trust`; the channel root) and the ``channel_*``
settings of :class:`updater.config.ServiceConfig`. Nothing here talks to the network:
:mod:`updater.services.channel.client` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]

from updater.config import ConfigError, ServiceConfig, check_ca_file
from updater.domain.errors import VerificationError
from updater.domain.keyring import TrustStore
from updater.domain.license import (
    License,
    check_channel,
    check_entitlement_key,
    derive_request_key,
    verify_license,
)
from updater.services.channel.client import ChannelError, ChannelSettings
from updater.services.installation.trust import ENTITLEMENT_KEY_FILE, TrustUnreadable, read_trust


class ChannelSetupError(ChannelError):
    """The installation's channel settings or trust files cannot be used; nothing was fetched."""

    check = "channel-setup"


@dataclass(frozen=True)
class ChannelContext:
    """What a channel check or download needs: the client's settings, the trust and the verified license."""

    settings: ChannelSettings
    trust: TrustStore
    license: License
    license_document: bytes = field(repr=False)
    entitlement_key: bytes = field(repr=False)


def check_channel_root(data: bytes) -> None:
    """Refuse a channel root that is not TUF root metadata (the client's trust anchor for the channel)."""
    try:
        metadata = Metadata.from_bytes(data)
    except (RepositoryError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"the channel root is not TUF root metadata: {error}") from None
    if not isinstance(metadata.signed, Root):
        raise ConfigError(f"the channel root is TUF {metadata.signed.type} metadata, not root")


def choose_channel(lic: License, requested: str | None) -> str:
    """The channel to follow: the one asked for if the license covers it, else the license's only one."""
    if requested:
        try:
            check_channel(lic, requested)
        except VerificationError as error:
            raise ConfigError(error.message) from None
        return requested
    if len(lic.channels) != 1:
        raise ConfigError(
            f"license {lic.license_id} covers channels {', '.join(sorted(lic.channels))}: "
            "say which to follow with --channel"
        )
    return next(iter(lic.channels))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ChannelSetupError(
            f"{what} {path} is missing (set the channel up with corral-updater init)"
        ) from None
    except OSError as error:
        raise ChannelSetupError(f"cannot read {what} {path}: {error.strerror}") from None


def load_channel(config: ServiceConfig, *, now: datetime) -> ChannelContext:
    """The channel context from the home; :class:`ChannelSetupError` (or the license's own
    :class:`~updater.domain.errors.VerificationError`, e.g. an expired license) when it cannot be used."""
    if not config.channel_configured:
        raise ChannelSetupError(f"no update channel is configured in {config.home / 'updater.json'}")
    try:
        installed = read_trust(config.trust_dir, now=now)
    except TrustUnreadable as error:
        raise ChannelSetupError(str(error)) from None
    key = installed.entitlement_key
    if key is None:
        raise ChannelSetupError(
            f"the entitlement key {config.trust_dir / ENTITLEMENT_KEY_FILE} is missing "
            "(set the channel up with corral-updater init)"
        )
    lic = verify_license(installed.license_document, installed.store.keyring, now=now)
    check_entitlement_key(lic, key)
    check_channel(lic, config.channel)
    try:
        check_ca_file(Path(config.channel_ca_file))
    except ConfigError as error:
        raise ChannelSetupError(str(error)) from None
    settings = ChannelSettings(
        base_url=config.channel_url,
        channel=config.channel,
        license_id=lic.license_id,
        request_key=derive_request_key(key),
        ca_file=Path(config.channel_ca_file),
        state_dir=config.channel_state_dir,
        trusted_root=_read(config.channel_root_path, "the channel root"),
    )
    return ChannelContext(settings, installed.store, lic, installed.license_document, key)
