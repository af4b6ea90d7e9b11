"""Specification of signed channel requests: canonical string, HMAC, freshness window and replay cache."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.domain import request_auth as ra

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = 1_790_000_000.0
PATH = "/v1/channels/stable/targets/abc.corral-2.0.0.bundle"


def signed(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "license_id": "lic-1",
        "method": "GET",
        "path": PATH,
        "now": NOW,
        "range_header": None,
    }
    args.update(overrides)
    key = args.pop("key", KEY)
    return ra.sign_request(key, **args)  # type: ignore[arg-type]


def verify(headers: dict[str, str], *, cache: ra.ReplayCache | None = None, **overrides: object) -> None:
    args: dict[str, object] = {"method": "GET", "path": PATH, "range_header": None, "now": NOW}
    args.update(overrides)
    key = args.pop("key", KEY)
    request = ra.parse_auth_headers(headers)
    ra.verify_request(
        request,
        key,  # type: ignore[arg-type]
        replay_cache=ra.ReplayCache() if cache is None else cache,
        **args,  # type: ignore[arg-type]
    )


def test_a_signed_request_verifies() -> None:
    verify(signed())


def test_a_signed_range_request_verifies_only_with_the_same_range() -> None:
    headers = signed(range_header="bytes=100-")
    verify(headers, range_header="bytes=100-")
    with pytest.raises(ra.BadSignatureError):
        verify(headers, range_header="bytes=0-")
    with pytest.raises(ra.BadSignatureError):
        verify(headers, range_header=None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("method", "HEAD"), ("path", "/v1/channels/beta/targets/abc.corral-2.0.0.bundle"), ("key", OTHER_KEY)],
)
def test_changing_what_was_signed_breaks_the_signature(field: str, value: object) -> None:
    with pytest.raises(ra.BadSignatureError, match="signature does not match"):
        verify(signed(), **{field: value})


def test_a_different_license_id_breaks_the_signature() -> None:
    headers = signed()
    headers[ra.LICENSE_HEADER] = "lic-2"
    with pytest.raises(ra.BadSignatureError):
        verify(headers)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    headers = signed()
    headers[ra.TIMESTAMP_HEADER] = str(int(NOW) + 1)
    with pytest.raises(ra.BadSignatureError):
        verify(headers)


@pytest.mark.parametrize("header", ra.AUTH_HEADERS)
def test_each_missing_header_is_named(header: str) -> None:
    headers = signed()
    del headers[header]
    with pytest.raises(ra.MissingAuthError, match=header):
        ra.parse_auth_headers(headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (ra.LICENSE_HEADER, "../etc"),
        (ra.TIMESTAMP_HEADER, "-5"),
        (ra.TIMESTAMP_HEADER, "1e9"),
        (ra.NONCE_HEADER, "XYZ"),
        (ra.SIGNATURE_HEADER, "00"),
    ],
)
def test_malformed_headers_are_refused_by_name(header: str, value: str) -> None:
    headers = signed()
    headers[header] = value
    with pytest.raises(ra.MalformedAuthError, match=header):
        ra.parse_auth_headers(headers)


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_a_timestamp_outside_the_window_is_stale(skew: int) -> None:
    headers = signed(now=NOW + skew)
    with pytest.raises(ra.StaleRequestError, match="accepted window: 300 s"):
        verify(headers)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_a_timestamp_inside_the_window_is_accepted(skew: int) -> None:
    verify(signed(now=NOW + skew))


def test_the_same_request_twice_is_a_replay() -> None:
    cache = ra.ReplayCache()
    headers = signed()
    verify(headers, cache=cache)
    with pytest.raises(ra.ReplayedRequestError, match="replayed request"):
        verify(headers, cache=cache, now=NOW + 5)


def test_a_replay_is_refused_even_just_before_the_window_closes() -> None:
    cache = ra.ReplayCache(window_seconds=60)
    headers = signed()
    verify(headers, cache=cache)
    with pytest.raises(ra.ReplayedRequestError):
        verify(headers, cache=cache, now=NOW + 60)
    with pytest.raises(ra.StaleRequestError):
        verify(headers, cache=cache, now=NOW + 61)


def test_the_same_nonce_under_another_license_is_not_a_replay() -> None:
    cache = ra.ReplayCache()
    nonce = ra.new_nonce()
    verify(signed(nonce=nonce), cache=cache)
    verify(signed(nonce=nonce, license_id="lic-2"), cache=cache)


def test_a_bad_signature_does_not_consume_the_nonce() -> None:
    cache = ra.ReplayCache()
    headers = signed()
    with pytest.raises(ra.BadSignatureError):
        verify(headers, cache=cache, key=OTHER_KEY)
    assert len(cache) == 0
    verify(headers, cache=cache)


def test_the_cache_forgets_nonces_once_their_window_has_passed() -> None:
    cache = ra.ReplayCache(window_seconds=10, max_entries=2)
    verify(signed(), cache=cache)
    verify(signed(), cache=cache)
    verify(signed(now=NOW + 20), cache=cache, now=NOW + 20)
    assert len(cache) == 1


def test_a_full_cache_refuses_requests_it_can_no_longer_check_rather_than_forgetting_them() -> None:
    cache = ra.ReplayCache(window_seconds=300, max_entries=3)
    first = signed(now=NOW - 10)
    verify(first, cache=cache)
    for i in range(3):
        verify(signed(now=NOW + i), cache=cache)
    assert len(cache) == 3
    # `first` was evicted to make room: its replay must still fail, because it is now below the floor.
    with pytest.raises(ra.ReplayedRequestError, match="sign a new request"):
        verify(first, cache=cache)
    # A new request newer than the floor is still accepted.
    verify(signed(now=NOW + 5), cache=cache)


def test_a_short_request_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ra.sign_request(b"short", license_id="lic-1", method="GET", path=PATH, now=NOW)


def test_the_canonical_string_is_one_field_per_line() -> None:
    message = ra.canonical_request(
        method="GET", path="/p", license_id="l", timestamp=7, nonce="n", range_header="bytes=0-1"
    )
    assert message == b"corral-request-v1\nGET\n/p\nl\n7\nn\nbytes=0-1"


def test_a_path_with_a_line_break_cannot_be_signed() -> None:
    with pytest.raises(ra.MalformedAuthError, match="line breaks"):
        signed(path="/a\nb")


paths = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80).map(
    lambda p: "/" + p
)
ranges = st.none() | st.integers(min_value=0, max_value=2**40).map(lambda n: f"bytes={n}-")


@given(path=paths, range_header=ranges, skew=st.integers(min_value=-300, max_value=300))
def test_any_signed_request_verifies_with_its_own_key(path: str, range_header: str | None, skew: int) -> None:
    headers = signed(path=path, range_header=range_header, now=NOW + skew)
    verify(headers, path=path, range_header=range_header)


@given(path=paths, other=paths)
def test_a_signature_never_carries_over_to_another_path(path: str, other: str) -> None:
    headers = signed(path=path)
    if other == path:
        verify(headers, path=other)
    else:
        with pytest.raises(ra.BadSignatureError):
            verify(headers, path=other)


@given(flip=st.integers(min_value=0, max_value=63))
def test_any_altered_signature_digit_is_refused(flip: int) -> None:
    headers = signed()
    digits = list(headers[ra.SIGNATURE_HEADER])
    digits[flip] = "0" if digits[flip] != "0" else "1"
    headers[ra.SIGNATURE_HEADER] = "".join(digits)
    with pytest.raises(ra.BadSignatureError):
        verify(headers)


def test_the_signature_is_hmac_sha256_of_the_canonical_string() -> None:
    headers = signed(nonce="0" * 32)
    message = ra.canonical_request(
        method="GET", path=PATH, license_id="lic-1", timestamp=int(NOW), nonce="0" * 32, range_header=None
    )
    assert headers[ra.SIGNATURE_HEADER] == hmac.new(KEY, message, "sha256").hexdigest()
