"""The periodic channel check that beat schedules (``corral.check_channel``).

With an update channel configured (``corral-updater init --channel-url … --channel-ca … --channel-root …``),
the check refreshes the channel's signed TUF metadata through
:class:`updater.services.channel.client.ChannelClient`
and records every release the channel offers that the store does not know yet: a ``releases`` row (source
``pulled``: it comes from the channel) with what the signed metadata says about it, not staged until it is
downloaded (:mod:`updater.services.channel.downloads`). Releases not newer than the installed one, or dated
after the
license's updates-until date (the server would refuse them), are counted but not recorded.

Every run leaves one audit entry: ``ok`` with what was found, or ``failed`` naming what went wrong (channel
unreachable, licence refused, expired or rolled-back metadata, …). A failure is an answer, not an exception:
beat runs the next check at its interval, never a crash loop. Without a configured channel the check says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.domain.errors import VerificationError
from updater.domain.semver import parse_version
from updater.services.accounts import audit
from updater.services.channel.client import ChannelClient, ChannelError, Release
from updater.services.channel.setup import ChannelContext, load_channel
from updater.store import queries
from updater.store.db import transaction
from updater.store.models import Outcome, ReleaseSource

ACTION = "channel.check"
MIB = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    checked: bool
    message: str
    new_releases: tuple[str, ...] = ()


def check_channel(
    config: ServiceConfig, sessions: sessionmaker[Session], *, actor: str, now: datetime | None = None
) -> CheckResult:
    if not config.channel_configured:
        result = CheckResult(
            checked=False,
            message=f"no update channel is configured in {config.home / 'updater.json'}; "
            "import bundles by hand (air-gapped) or configure the channel",
        )
    else:
        result = _check(config, sessions, now=now or datetime.now(UTC))
    audit.record_separately(
        sessions,
        actor=actor,
        action=ACTION,
        target=config.channel,
        outcome=Outcome.OK if result.checked else Outcome.FAILED,
        detail=result.message,
    )
    return result


def _check(config: ServiceConfig, sessions: sessionmaker[Session], *, now: datetime) -> CheckResult:
    where = f"channel {config.channel} at {config.channel_url}"
    try:
        context = load_channel(config, now=now)
        client = ChannelClient(context.settings)
        client.refresh()
        offered = [release for release in client.releases() if release.channel == config.channel]
    except (ChannelError, VerificationError) as error:
        return CheckResult(False, f"{where}: {error}")
    try:
        new, older, past = _record(sessions, context, offered)
    except sa.exc.IntegrityError:  # a concurrent check recorded one of them first: its rows stand
        new, older, past = _record(sessions, context, offered)
    parts = [f"{where}: {len(offered)} release(s) offered"]
    parts.append(f"new: {', '.join(new)}" if new else "nothing new")
    if older:
        parts.append(f"{older} not newer than the installed release")
    if past:
        parts.append(f"{past} dated after the license's updates-until {context.license.updates_until}")
    return CheckResult(True, "; ".join(parts), tuple(new))


def _record(
    sessions: sessionmaker[Session], context: ChannelContext, offered: list[Release]
) -> tuple[list[str], int, int]:
    new: list[str] = []
    older = past = 0
    with transaction(sessions) as session:
        installed = queries.installed_release(session)
        installed_version = parse_version(installed.version) if installed else None
        for release in offered:
            if installed_version is not None and release.version <= installed_version:
                older += 1
            elif release.release_date > context.license.updates_until:
                past += 1
            elif queries.find_release(session, str(release.version)) is None:
                queries.add_release(
                    session,
                    version=str(release.version),
                    channel=release.channel,
                    release_date=release.release_date,
                    source=ReleaseSource.PULLED,
                    notes=_summary(release),
                )
                new.append(str(release.version))
    return new, older, past


def _summary(release: Release) -> str:
    """What the channel's signed metadata says; the release notes themselves come inside the bundle."""
    custom = release.target.custom if isinstance(release.target.custom, dict) else {}
    kind = "a delta over a base image" if release.delta_base_sha256 else "a whole node image"
    upgrade_from = custom.get("upgrade_from")
    lines = [
        f"Corral {release.version} ({release.channel}), released {release.release_date.isoformat()}.",
        f"Bundle: {release.length / MIB:.1f} MiB, {kind}.",
    ]
    if isinstance(upgrade_from, str):
        lines.append(f"Upgrades from {upgrade_from}.")
    lines.append("The full release notes come with the bundle once it is downloaded.")
    return "\n".join(lines)
