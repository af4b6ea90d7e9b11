"""The periodic channel check that beat schedules (``corral.check_channel``).

Until the installation is configured with an update channel (server URL, CA, channel root, license —
the channel client's :class:`updater.services.channel.ChannelSettings`), the check can only say so; it records
that in the audit log, so an operator sees on the Audit page that the periodic check runs and why it finds
nothing. The channel engineer's ``pull``/``refresh`` plugs in here, behind the same task.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from updater.config import ServiceConfig
from updater.services import audit
from updater.store.models import Outcome

ACTION = "channel.check"


@dataclass(frozen=True)
class CheckResult:
    checked: bool
    message: str


def check_channel(config: ServiceConfig, sessions: sessionmaker[Session], *, actor: str) -> CheckResult:
    result = CheckResult(
        checked=False,
        message=f"no update channel is configured in {config.home / 'updater.json'}; "
        "import bundles by hand (air-gapped) or configure the channel",
    )
    audit.record_separately(
        sessions,
        actor=actor,
        action=ACTION,
        outcome=Outcome.OK if result.checked else Outcome.FAILED,
        detail=result.message,
    )
    return result
