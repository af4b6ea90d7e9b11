"""Query parameters shared by the UI and the API: whole numbers within what the database can hold."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import BadRequest

# SQL integers (SQLite and PostgreSQL BIGINT) are signed 64-bit: a larger id can only be a bad request.
DB_INT_MIN, DB_INT_MAX = -(2**63), 2**63 - 1


def int_arg(
    name: str, *, default: int | None = None, minimum: int = DB_INT_MIN, maximum: int = DB_INT_MAX
) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}")
    return value
