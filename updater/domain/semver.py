"""Strict semantic versions (semver.org 2.0.0) and upgrade-from ranges. Never compare versions as strings.

A range is a comma-separated list of comparators that must all hold, e.g. ``">=1.2.0, <1.4.0"``; the
operators are ``>=``, ``>``, ``<=``, ``<``, ``==``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from updater.domain.errors import InvalidVersion

_NUM = r"0|[1-9][0-9]*"
_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?"
    rf"(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?"
)
_MAX_LEN = 128
_OPERATORS = (">=", "<=", "==", ">", "<")


@dataclass(frozen=True, order=False)
class Version:
    """A parsed semantic version; ``==``/``<`` follow semver precedence (build metadata is ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release ranks above all of its pre-releases; numeric identifiers rank below alphanumeric ones.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __le__(self, other: Version) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: Version) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: Version) -> bool:
        return self._key() >= other._key()


def parse_version(text: str) -> Version:
    """Parse ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`` strictly (no leading zeros, no 'v' prefix)."""
    if not isinstance(text, str) or len(text) > _MAX_LEN:
        raise InvalidVersion(f"{text!r} is not a semantic version")
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise InvalidVersion(f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH)")
    pre = tuple(match["pre"].split(".")) if match["pre"] else ()
    for ident in pre:
        if ident.isdigit() and ident != "0" and ident.startswith("0"):
            raise InvalidVersion(f"{text!r}: numeric pre-release identifier {ident!r} has a leading zero")
    build = tuple(match["build"].split(".")) if match["build"] else ()
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]), pre, build)


@dataclass(frozen=True)
class VersionRange:
    """A conjunction of comparators; ``str()`` gives back the canonical text."""

    comparators: tuple[tuple[str, Version], ...]

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, Version):
            return False
        return all(_compare(version, op, bound) for op, bound in self.comparators)

    def __str__(self) -> str:
        return ", ".join(f"{op}{bound}" for op, bound in self.comparators)


def _compare(version: Version, op: str, bound: Version) -> bool:
    if op == ">=":
        return version >= bound
    if op == ">":
        return version > bound
    if op == "<=":
        return version <= bound
    if op == "<":
        return version < bound
    return version == bound


def parse_range(text: str) -> VersionRange:
    """Parse ``">=1.2.0, <1.4.0"``; at least one comparator, each an operator then a strict version."""
    if not isinstance(text, str) or not text.strip() or len(text) > 1024:
        raise InvalidVersion(f"{text!r} is not a version range")
    comparators: list[tuple[str, Version]] = []
    for part in text.split(","):
        item = part.strip()
        op = next((o for o in _OPERATORS if item.startswith(o)), None)
        if op is None:
            raise InvalidVersion(
                f"{item!r} in range {text!r} does not start with one of {', '.join(_OPERATORS)}"
            )
        comparators.append((op, parse_version(item[len(op) :].strip())))
    return VersionRange(tuple(comparators))
