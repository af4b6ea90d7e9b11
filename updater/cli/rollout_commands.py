"""``corral-updater`` commands for rollouts: `plan`, `apply`, `pause`, `resume`,
`abort`, `break-lock` (the operator's side of the Rollout page).

They call the same service functions as the web UI and the API.
"""

from __future__ import annotations

from typing import Any

# Exceptions these commands raise for refused input or state (printed as one line, exit code 2).
REFUSALS: tuple[type[Exception], ...] = ()


def add_commands(commands: Any) -> None:
    """Register this module's sub-commands on ``corral-updater``'s sub-parser."""
