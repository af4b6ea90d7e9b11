"""The API fuzzed from its own OpenAPI document (Schemathesis strategies, Hypothesis), as operator and viewer.

For the operator: no 5xx, and every answer matches the document (status code, content type, schema).
For the viewer: no 5xx, reads are answered, and every mutation is refused (403) with nothing changed.
With invalid input (Schemathesis' negative mode: whatever breaks the document's schemas, patterns and limits):
a documented 4xx, never a 2xx or a 5xx; so the document must say what the service accepts (an operation whose
input cannot be made invalid is one whose document is looser than the service).
(Schemathesis' pytest plugin does not run under pytest 9 here, so its strategies are driven directly.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    CheckContext,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode

from tests.support.net import free_port
from tests.unit.test_web import Site, bearer, make_site
from updater.services.accounts import auth
from updater.store import queries as q
from updater.store.db import transaction
from updater.web.openapi import USERNAME_SCHEMA, openapi_document

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@schemathesis.check
def not_a_server_error_but_the_queue(
    ctx: CheckContext, response: Response, case: schemathesis.Case
) -> bool | None:
    """No 5xx, except the documented 503 of a request that got as far as the task queue: this tier runs no
    Redis (its site points at a closed loopback port), and "queue unreachable" is the answer the API gives
    then (an upload that passes every check before the queue is rare, but Hypothesis finds one at times)."""
    if response.status_code == 503 and "the task queue (Redis at" in response.text:
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error_but_the_queue,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item in openapi_document()["paths"].items()
    for method in item
    if path != "/api/v1/openapi.json"
]
# Operations that take input (parameters or a body): each can be sent invalid input.
TAKING_INPUT = [
    f"{method.upper()} {path}"
    for path, item in openapi_document()["paths"].items()
    for method, operation in item.items()
    if path != "/api/v1/openapi.json" and (operation.get("parameters") or operation.get("requestBody"))
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # No task queue in this tier: a closed loopback port, so reaching it is a quick, documented 503.
    # No inventory either: operations that read the cluster answer the documented "cannot be used" problem at
    # once, instead of running ansible-inventory on every generated example to reach the same answer.
    made = make_site(
        tmp_path_factory.mktemp("fuzz"), redis_url=f"redis://127.0.0.1:{free_port()}/0", inventory_path=""
    )
    yield made
    made.app.extensions["corral"].engine.dispose()


def _operation(site: Site, label: str) -> schemathesis.APIOperation:
    method, path = label.split(" ", 1)
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", site.app)[path][method]


def _spooled(site: Site) -> list[str]:
    """Upload spool files and import locks left in the home (a refused or fuzzed upload leaves none)."""
    imports_dir = site.home / "imports"
    return (
        sorted(p.name for p in imports_dir.glob("*") if p.suffix != ".json") if imports_dir.exists() else []
    )


def _users(site: Site) -> list[tuple[str, str, bool]]:
    with transaction(site.sessions) as db:
        return [(u.username, str(u.role), u.disabled) for u in q.list_users(db)]


def test_every_documented_operation_is_fuzzed(site: Site) -> None:
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", site.app)
    assert sorted(result.ok().label for result in loaded.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_the_api_answers_an_operator_as_documented_and_never_with_5xx(site: Site, label: str) -> None:
    @FUZZ
    @given(case=_operation(site, label).as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=bearer(site.operator_token), checks=CHECKS)

    fuzz()
    assert _spooled(site) == []


@pytest.mark.parametrize("label", OPERATIONS)
def test_a_viewer_can_read_but_every_mutation_is_refused(site: Site, label: str) -> None:
    before = _users(site)

    @FUZZ
    @given(case=_operation(site, label).as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=bearer(site.viewer_token))
        assert response.status_code < 500
        if case.method.upper() == "GET":
            assert response.status_code in (200, 400, 404), response.text
        else:
            # 404 only when the generated path names no route at all (e.g. a username with '/').
            assert response.status_code in (403, 404), response.text

    fuzz()
    assert _users(site) == before
    assert _spooled(site) == []


def test_the_documented_username_pattern_is_the_services_own() -> None:
    assert USERNAME_SCHEMA["pattern"] == f"^{auth.USERNAME_PATTERN.pattern}$"


def test_only_operations_without_any_input_are_left_out_of_the_invalid_input_fuzzing() -> None:
    assert sorted(set(OPERATIONS) - set(TAKING_INPUT)) == [
        "GET /api/v1/lock",
        "GET /api/v1/releases",
        "GET /api/v1/status",
        "GET /api/v1/users",
        "GET /api/v1/whoami",
    ]


@pytest.mark.parametrize("label", TAKING_INPUT)
def test_invalid_input_is_refused_with_a_documented_4xx_and_never_5xx(site: Site, label: str) -> None:
    """Negative mode: every case breaks the document somewhere (a username off its pattern, a token id that
    is not 16 hex digits, an id longer than the store keeps, a missing field, a wrong type, a limit out of
    range); the token is fixed, so what breaks is always the input."""
    before = _users(site)
    strategy = _operation(site, label).as_strategy(
        generation_mode=GenerationMode.NEGATIVE, headers=bearer(site.operator_token)
    )

    @FUZZ
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=[*CHECKS, negative_data_rejection])

    fuzz()
    assert _spooled(site) == []
    assert _users(site) == before  # invalid input changes nothing (a username off the pattern is no user)
