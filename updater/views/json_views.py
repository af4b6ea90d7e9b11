"""The JSON shapes of the store's objects, shared by the API, the pages' live parts and the CLI."""

from __future__ import annotations

from typing import Any

from updater.services.accounts import tokens
from updater.store.models import ApiToken, AuditEntry, Release, Rollout, User


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": str(user.role),
        "created_at": _iso(user.created_at),
        "disabled": user.disabled,
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    """An API token's public part, dates and state (active, expired or revoked), never its secret."""
    return {
        "token_id": token.token_id,
        "username": token.user.username,
        "name": token.name,
        "created_at": _iso(token.created_at),
        "expires_at": _iso(token.expires_at),
        "state": str(tokens.state(token)),
    }


def release_json(release: Release) -> dict[str, Any]:
    return {
        "version": release.version,
        "channel": release.channel,
        "release_date": release.release_date.isoformat(),
        "notes": release.notes,
        "source": str(release.source),
        "staged": release.staged_path is not None,
        "installed_at": _iso(release.installed_at),
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in release.checks],
    }


def rollout_json(rollout: Rollout) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "target_release": rollout.target_release.version,
        "state": str(rollout.state),
        "created_by": rollout.created_by,
        "created_at": _iso(rollout.created_at),
        "started_at": _iso(rollout.started_at),
        "finished_at": _iso(rollout.finished_at),
        "plan": rollout.plan,
        "executed_order": rollout.executed_order,
        "probe_report": rollout.probe_report,
        "steps": [
            {
                "node": s.node,
                "position": s.position,
                "state": str(s.state),
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
                "duration_seconds": s.duration_seconds,
                "phase_seconds": s.phase_seconds,
                "message": s.message,
            }
            for s in rollout.steps
        ],
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": str(entry.outcome),
        "source_ip": entry.source_ip,
        "detail": entry.detail,
    }
