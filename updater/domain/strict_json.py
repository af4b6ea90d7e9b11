"""Strict JSON for signed documents: duplicate keys, NaN/Infinity and non-object roots are refused.

Two JSON parsers that disagree on which of two duplicate keys wins let a signed document mean one thing to the
verifier and another to whatever reads it later; so a duplicate key is an error, never a choice.
"""

from __future__ import annotations

import json
from typing import Any

from updater.domain.errors import DuplicateJsonKey, MalformedDocument


def _no_duplicates(error: type[DuplicateJsonKey], what: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise error(f"{what} has the JSON key {key!r} twice")
            result[key] = value
        return result

    return hook


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def loads_object(
    data: bytes,
    *,
    what: str,
    error: type[MalformedDocument] = MalformedDocument,
    duplicate_error: type[DuplicateJsonKey] = DuplicateJsonKey,
) -> dict[str, Any]:
    """Parse UTF-8 JSON whose root is an object; raise ``duplicate_error`` or ``error`` naming ``what``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates(duplicate_error, what), parse_constant=_no_constant
        )
    except DuplicateJsonKey:
        raise
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    return value


def loads_any(data: bytes, *, what: str, error: type[MalformedDocument] = MalformedDocument) -> Any:
    """Like :func:`loads_object` but for any JSON root (e.g. a signature list)."""
    try:
        text = data.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_no_duplicates(DuplicateJsonKey, what), parse_constant=_no_constant
        )
    except DuplicateJsonKey:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None


def dumps(value: Any) -> bytes:
    """Serialise deterministically (sorted keys, compact, UTF-8) for documents the vendor tools write."""
    return (
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
    )
