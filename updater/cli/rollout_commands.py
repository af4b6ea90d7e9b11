"""``corral-updater`` commands for rollouts: `plan`, `apply`, `pause`, `resume`,
`abort`, `break-lock` (the operator's side of the Rollout page).

They call the same service functions as the web UI and the API (:mod:`updater.services.rollouts.control`);
`apply`
and `resume` enqueue the Celery task ``corral.rollout`` once their transaction has committed. A refusal is
audited in a transaction of its own, printed as one line, and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from updater.config import ServiceConfig, home_from_env, load_config
from updater.services.accounts import audit
from updater.services.rollouts import control as rollouts
from updater.services.rollouts.control import RolloutConflict, RolloutRefused
from updater.store.db import make_engine, session_factory, transaction
from updater.store.models import Outcome

# Exceptions these commands raise for refused input or state (printed as one line, exit code 2).
REFUSALS: tuple[type[Exception], ...] = (RolloutConflict, RolloutRefused)

T = TypeVar("T")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _config(args: argparse.Namespace) -> ServiceConfig:
    return load_config(home_from_env(args.home))


def _mutate(
    config: ServiceConfig,
    action: str,
    target: str,
    work: Callable[[Session], T],
    guard: AbstractContextManager[None] | None = None,
) -> T:
    """Run ``work`` in one transaction (inside ``guard``, held until it has committed); a refusal is audited
    on its own and raised again."""
    engine = make_engine(config.effective_database_url)
    try:
        sessions = session_factory(engine)
        try:
            with guard or contextlib.nullcontext(), transaction(sessions) as db:
                return work(db)
        except REFUSALS as error:
            audit.record_separately(
                sessions,
                actor=_actor(),
                action=action,
                target=target,
                outcome=Outcome.REFUSED,
                detail=str(error),
            )
            raise
    finally:
        engine.dispose()


def _send(config: ServiceConfig, rollout_ids: list[str]) -> None:
    from updater.services.jobs import TASK_ROLLOUT, JobQueue  # noqa: PLC0415 (Celery only when enqueuing)

    queue = JobQueue(config)
    try:
        for rollout_id in rollout_ids:
            queue.send(TASK_ROLLOUT, [rollout_id])
    finally:
        queue.close()


def _active(db: Session, given: str | None) -> str:
    if given:
        return given
    active = rollouts.active_rollouts(db)
    if not active:
        raise RolloutRefused("no rollout is in progress: give its id")
    return active[-1].id


def _print_preview(preview: rollouts.PlanPreview) -> None:
    print(f"Plan for {preview.version}:")
    for line in preview.lines:
        print(f"  {line}")
    minutes, seconds = divmod(preview.estimated_seconds, 60)
    print(f"estimated duration: {minutes} min {seconds} s")
    print("preflight:")
    for check in preview.preflight:
        print(f"  [{'ok' if check.passed else 'FAILED'}] {check.name}: {check.detail}")


def cmd_plan(args: argparse.Namespace) -> int:
    config = _config(args)
    preview = _mutate(
        config, "rollout.plan", args.version, lambda db: rollouts.preview(config, db, args.version)
    )
    if args.json:
        print(json.dumps(preview.as_json(), indent=2))
    else:
        _print_preview(preview)
    return 0 if preview.ready else 1


def cmd_apply(args: argparse.Namespace) -> int:
    config = _config(args)
    if not args.yes:
        preview = _mutate(
            config, "rollout.start", args.version, lambda db: rollouts.preview(config, db, args.version)
        )
        _print_preview(preview)
        if not sys.stdin.isatty():
            raise RolloutRefused("confirm with --yes (standard input is not a terminal)")
        if input(f"Roll the cluster out to {args.version}? Type yes: ").strip() != "yes":
            print("nothing started")
            return 1
    queued: list[str] = []
    rollout_id = _mutate(
        config,
        "rollout.start",
        args.version,
        lambda db: rollouts.start(config, db, args.version, _actor(), queued.append),
        guard=rollouts.starting(config, _actor(), args.version),
    )
    _send(config, queued)
    print(f"rollout {rollout_id} started")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    config = _config(args)

    def work(db: Session) -> str:
        rollout_id = _active(db, args.rollout)
        rollouts.pause(config, db, rollout_id, _actor())
        return rollout_id

    rollout_id = _mutate(config, "rollout.pause", args.rollout or "", work)
    print(f"rollout {rollout_id} pauses once the node in progress is done")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    config = _config(args)
    queued: list[str] = []

    def work(db: Session) -> str:
        rollout_id = args.rollout or _paused(db)
        rollouts.resume(config, db, rollout_id, _actor(), queued.append)
        return rollout_id

    rollout_id = _mutate(config, "rollout.resume", args.rollout or "", work)
    _send(config, queued)
    print(f"rollout {rollout_id} resumed")
    return 0


def _paused(db: Session) -> str:
    paused = [rollout for rollout in rollouts.active_rollouts(db) if rollout.state == "paused"]
    if not paused:
        raise RolloutRefused("no rollout is paused: give its id")
    return paused[-1].id


def cmd_abort(args: argparse.Namespace) -> int:
    config = _config(args)

    def work(db: Session) -> str:
        rollout_id = _active(db, args.rollout)
        rollouts.abort(config, db, rollout_id, _actor())
        return rollout_id

    rollout_id = _mutate(config, "rollout.abort", args.rollout or "", work)
    print(f"rollout {rollout_id} aborts once the node in progress is done (the lock is then released)")
    return 0


def cmd_break_lock(args: argparse.Namespace) -> int:
    config = _config(args)
    _mutate(
        config,
        "rollout.break_lock",
        str(args.token),
        lambda db: rollouts.break_lock(config, db, args.token, _actor()),
    )
    print(f"the cluster update lock (token {args.token}) was broken")
    return 0


def add_commands(commands: Any) -> None:
    """Register this module's sub-commands on ``corral-updater``'s sub-parser."""
    plan = commands.add_parser("plan", help="the plan, preflight checks and estimated duration to VERSION")
    plan.add_argument("version")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    apply = commands.add_parser("apply", help="start a rollout to VERSION (asks to confirm the plan)")
    apply.add_argument("version")
    apply.add_argument("--yes", action="store_true", help="do not ask: start at once")
    apply.set_defaults(func=cmd_apply)

    for name, func, text in (
        ("pause", cmd_pause, "pause the rollout once the node in progress is done"),
        ("resume", cmd_resume, "continue a paused rollout under the same id"),
        ("abort", cmd_abort, "end the rollout once the node in progress is done, and release the lock"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("rollout", nargs="?", help="rollout id (default: the one in progress)")
        command.set_defaults(func=func)

    break_lock = commands.add_parser(
        "break-lock", help="remove a dead rollout's cluster update lock by its token"
    )
    break_lock.add_argument("token", type=int)
    break_lock.set_defaults(func=cmd_break_lock)
