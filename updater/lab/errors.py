"""The one exception type the lab raises for anything the operator can fix: the message says what to do."""

from __future__ import annotations


class LabError(Exception):
    """A lab operation was refused or failed; ``str()`` is a complete message for the operator."""
