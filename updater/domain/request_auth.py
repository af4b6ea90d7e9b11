"""Signed update-channel requests: the canonical string, its HMAC, the freshness window and replay cache.

Every request a Corral installation sends to the vendor's update server carries four headers: the license id,
a Unix timestamp, a random nonce and an HMAC-SHA256 over the canonical request, keyed with the *request key*
derived from the license's entitlement key (the server stores only that derived key). A captured request
cannot be replayed: the server accepts a timestamp only within a small window and remembers every nonce it
accepted until that window has passed.

Pure module: bytes and strings in, a verified :class:`SignedRequest` or one :class:`RequestAuthError`
subclass out. The clock is always passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

LICENSE_HEADER = "X-Corral-License"
TIMESTAMP_HEADER = "X-Corral-Timestamp"
NONCE_HEADER = "X-Corral-Nonce"
SIGNATURE_HEADER = "X-Corral-Signature"
AUTH_HEADERS = (LICENSE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

SCHEME = "corral-request-v1"
DEFAULT_WINDOW_SECONDS = 300
DEFAULT_REPLAY_CACHE_SIZE = 100_000

_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_RANGE = re.compile(r"[ -~]{0,200}")  # printable ASCII, bounded


class RequestAuthError(Exception):
    """A request failed authentication; the message says which check failed."""


class MissingAuthError(RequestAuthError):
    """One or more of the auth headers is absent."""


class MalformedAuthError(RequestAuthError):
    """An auth header is present but not in its expected form."""


class BadSignatureError(RequestAuthError):
    """The HMAC does not match the request and the license's request key."""


class StaleRequestError(RequestAuthError):
    """The timestamp is outside the accepted window around the server's clock."""


class ReplayedRequestError(RequestAuthError):
    """The nonce was already accepted within the window (or can no longer be proven fresh)."""


@dataclass(frozen=True)
class SignedRequest:
    """The auth headers of one request, parsed but not yet verified."""

    license_id: str
    timestamp: int
    nonce: str
    signature: str


def canonical_request(
    *, method: str, path: str, license_id: str, timestamp: int, nonce: str, range_header: str | None
) -> bytes:
    """The exact bytes that are signed: one field per line, the scheme first so the format can evolve.

    ``path`` is the request path as sent (including any query string). The Range header is signed so that a
    captured request cannot be turned into a request for other bytes.
    """
    if not _METHOD.fullmatch(method):
        raise MalformedAuthError(f"method {method!r} is not an upper-case HTTP method")
    if not path.startswith("/") or any(c in path for c in "\r\n"):
        raise MalformedAuthError("request path must start with '/' and hold no line breaks")
    if range_header is not None and not _RANGE.fullmatch(range_header):
        raise MalformedAuthError("Range header must be at most 200 printable ASCII characters")
    fields = [SCHEME, method, path, license_id, str(timestamp), nonce, range_header or ""]
    return "\n".join(fields).encode("utf-8")


def _mac(request_key: bytes, message: bytes) -> str:
    if len(request_key) < 32:
        raise ValueError("request key must be at least 32 bytes")
    return hmac.new(request_key, message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_request(
    request_key: bytes,
    *,
    license_id: str,
    method: str,
    path: str,
    now: float,
    range_header: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The auth headers for one request (a fresh nonce unless one is given)."""
    if not _LICENSE_ID.fullmatch(license_id):
        raise MalformedAuthError(f"license id {license_id!r} is not a valid license id")
    nonce = new_nonce() if nonce is None else nonce
    if not _NONCE.fullmatch(nonce):
        raise MalformedAuthError("nonce must be 32 lower-case hex digits")
    timestamp = int(now)
    message = canonical_request(
        method=method,
        path=path,
        license_id=license_id,
        timestamp=timestamp,
        nonce=nonce,
        range_header=range_header,
    )
    return {
        LICENSE_HEADER: license_id,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: _mac(request_key, message),
    }


def parse_auth_headers(headers: Mapping[str, str]) -> SignedRequest:
    """Read the auth headers; which one is missing or malformed is named in the error."""
    missing = [name for name in AUTH_HEADERS if headers.get(name) is None]
    if missing:
        raise MissingAuthError(f"missing auth header(s): {', '.join(missing)}")
    license_id = headers[LICENSE_HEADER]
    timestamp = headers[TIMESTAMP_HEADER]
    nonce = headers[NONCE_HEADER]
    signature = headers[SIGNATURE_HEADER]
    if not _LICENSE_ID.fullmatch(license_id):
        raise MalformedAuthError(f"{LICENSE_HEADER} is not a valid license id")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MalformedAuthError(f"{TIMESTAMP_HEADER} must be a Unix time in whole seconds")
    if not _NONCE.fullmatch(nonce):
        raise MalformedAuthError(f"{NONCE_HEADER} must be 32 lower-case hex digits")
    if not _SIGNATURE.fullmatch(signature):
        raise MalformedAuthError(f"{SIGNATURE_HEADER} must be 64 lower-case hex digits (HMAC-SHA256)")
    return SignedRequest(license_id=license_id, timestamp=int(timestamp), nonce=nonce, signature=signature)


def verify_signature(
    request: SignedRequest, request_key: bytes, *, method: str, path: str, range_header: str | None
) -> None:
    """Raise :class:`BadSignatureError` unless the HMAC covers exactly this request (constant time)."""
    message = canonical_request(
        method=method,
        path=path,
        license_id=request.license_id,
        timestamp=request.timestamp,
        nonce=request.nonce,
        range_header=range_header,
    )
    if not hmac.compare_digest(_mac(request_key, message), request.signature):
        raise BadSignatureError("request signature does not match (wrong entitlement key or altered request)")


def check_freshness(
    request: SignedRequest, *, now: float, window_seconds: int = DEFAULT_WINDOW_SECONDS
) -> None:
    """Raise :class:`StaleRequestError` when the timestamp is further than the window from ``now``."""
    skew = request.timestamp - now
    if abs(skew) > window_seconds:
        direction = "ahead of" if skew > 0 else "behind"
        raise StaleRequestError(
            f"request timestamp is {abs(int(skew))} s {direction} the server clock "
            f"(accepted window: {window_seconds} s); check the installation's clock"
        )


_TOO_OLD = (
    "replayed request: timestamp is older than the server can still check for replays; sign a new request"
)


class ReplayCache:
    """Remembers accepted (license id, nonce) pairs for as long as their timestamp is inside the window.

    The cache is bounded: when it is full, the entry with the oldest timestamp is evicted and its timestamp
    becomes a floor, so any request at or below that floor is refused as a possible replay. That trades a
    refusal (the client simply signs a new request) for never forgetting a nonce that could still be replayed.
    Not thread-safe by itself; the server holds a lock around :meth:`accept`.
    """

    def __init__(
        self, *, window_seconds: int = DEFAULT_WINDOW_SECONDS, max_entries: int = DEFAULT_REPLAY_CACHE_SIZE
    ) -> None:
        if max_entries < 1:
            raise ValueError("replay cache needs room for at least one entry")
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._floor = -1

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        # Insertion order is only roughly timestamp order (clients' clocks differ), so scan every entry.
        horizon = now - self.window_seconds
        stale = [key for key, ts in self._seen.items() if ts < horizon]
        for key in stale:
            del self._seen[key]

    def accept(self, request: SignedRequest, *, now: float) -> None:
        """Record a fresh request, or raise :class:`ReplayedRequestError` if seen or not provably new.

        Call only after :func:`check_freshness` and :func:`verify_signature` passed, so an attacker without
        the key cannot fill the cache.
        """
        key = (request.license_id, request.nonce)
        if key in self._seen:
            raise ReplayedRequestError("replayed request: this nonce was already used")
        if request.timestamp <= self._floor:
            raise ReplayedRequestError(_TOO_OLD)
        if len(self._seen) >= self.max_entries:
            self._expire(now)
        while len(self._seen) >= self.max_entries:
            oldest_key = min(self._seen, key=self._seen.__getitem__)
            self._floor = max(self._floor, self._seen.pop(oldest_key))
            if request.timestamp <= self._floor:
                raise ReplayedRequestError(_TOO_OLD)
        self._seen[key] = request.timestamp


def verify_request(
    request: SignedRequest,
    request_key: bytes,
    *,
    method: str,
    path: str,
    range_header: str | None,
    replay_cache: ReplayCache,
    now: float,
) -> None:
    """Run the checks that need the license's key, in order: signature, freshness, replay.

    The signature comes first so that nobody without the key can make the server remember nonces.
    """
    verify_signature(request, request_key, method=method, path=path, range_header=range_header)
    check_freshness(request, now=now, window_seconds=replay_cache.window_seconds)
    replay_cache.accept(request, now=now)
