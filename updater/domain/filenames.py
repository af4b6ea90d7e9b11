"""File names that came from outside (an upload's ``filename``, a path given to the CLI), made safe to keep.

A client chooses the name it sends: control characters (``\\x01``, ``ESC[31m``) would reach terminals that
read the audit log, and format characters (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width ones) make a page show
``evil.exe`` as something else. What is stored and shown is :func:`display_name`; where the name as sent
matters, :func:`escaped_name` keeps it as printable text.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 200
REPLACEMENT = "\ufffd"
# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned characters; line and
# paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def display_name(raw: str | None, *, default: str = "upload") -> str:
    """The last path component of ``raw``, each unsafe character replaced by U+FFFD, at most 200 chars."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    shown = "".join(REPLACEMENT if _unsafe(char) else char for char in base)[:MAX_NAME_CHARS]
    return shown if shown.strip(REPLACEMENT + " .") else default


def escaped_name(raw: str) -> str:
    """``raw`` with backslashes doubled and each unsafe character written as ``\\xNN``/``\\uNNNN``."""
    out = []
    for char in raw[: MAX_NAME_CHARS * 2]:
        if char == "\\":
            out.append("\\\\")
        elif _unsafe(char):
            code = ord(char)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
        else:
            out.append(char)
    return "".join(out)
