"""The OpenAPI 3.1 description of ``/api/v1``, written by hand next to the routes it describes.

A test compares it with the app's URL map, so a route added without a description fails the suite.
"""

from __future__ import annotations

from typing import Any

API_VERSION = "1"


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "bad input (the message says which)",
        401: "no valid API token",
        403: "the token's user lacks the role",
        404: "no such object",
        409: "conflicts with existing state",
        413: "request body larger than the upload limit",
        422: "refused by the service in this state (the message says why)",
        503: "a component the service needs (the task queue) is not reachable",
    }
    return {str(code): _json(_ref("Error"), texts[code]) for code in codes}


# What the service accepts, as tight as the service itself: a username is auth.USERNAME_PATTERN (a test
# compares the two), a token id auth's 16 hex digits, and the ids and versions the store keeps are at most
# 64 characters (their columns), so nothing else can name an object.
USERNAME_SCHEMA = {"type": "string", "pattern": "^[a-z][a-z0-9._-]{0,63}$"}
_STORED_ID = {"type": "string", "minLength": 1, "maxLength": 64}
_USERNAME = {"name": "username", "in": "path", "required": True, "schema": USERNAME_SCHEMA}
_ROLLOUT_ID = {"name": "rollout_id", "in": "path", "required": True, "schema": _STORED_ID}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": _STORED_ID}
_TOKEN_ID = {
    "name": "token_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
}
_IMPORT_ID = {"name": "import_id", "in": "path", "required": True, "schema": _STORED_ID}
_CHECK = {
    "type": "object",
    "required": ["name", "passed", "detail"],
    "properties": {"name": {"type": "string"}, "passed": {"type": "boolean"}, "detail": {"type": "string"}},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            }
        },
    },
    "User": {
        "type": "object",
        "required": ["username", "role", "created_at", "disabled"],
        "properties": {
            "username": {"type": "string"},
            "role": {"type": "string", "enum": ["viewer", "operator"]},
            "created_at": {"type": "string", "format": "date-time"},
            "disabled": {"type": "boolean"},
        },
    },
    "ApiToken": {
        "type": "object",
        "required": ["token_id", "username", "name", "created_at", "expires_at", "state"],
        "properties": {
            "token_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "username": {"type": "string"},
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": _nullable("string", format="date-time"),
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
        },
    },
    "Check": {
        "type": "object",
        "required": ["name", "passed", "detail"],
        "properties": {
            "name": {"type": "string"},
            "passed": {"type": "boolean"},
            "detail": {"type": "string"},
        },
    },
    "Release": {
        "type": "object",
        "required": [
            "version",
            "channel",
            "release_date",
            "notes",
            "source",
            "staged",
            "installed_at",
            "checks",
        ],
        "properties": {
            "version": {"type": "string"},
            "channel": {"type": "string"},
            "release_date": {"type": "string", "format": "date"},
            "notes": {"type": "string"},
            "source": {"type": "string", "enum": ["pulled", "imported"]},
            "staged": {"type": "boolean"},
            "installed_at": _nullable("string", format="date-time"),
            "checks": {"type": "array", "items": _ref("Check")},
        },
    },
    "Download": {
        "type": "object",
        "required": [
            "state",
            "active",
            "bytes_done",
            "bytes_total",
            "resumed_from",
            "percent",
            "started_by",
            "started_at",
            "finished_at",
            "failed_check",
            "message",
        ],
        "properties": {
            "state": {"type": "string", "enum": ["running", "interrupted", "failed", "staged"]},
            "active": {"type": "boolean"},
            "bytes_done": {"type": "integer"},
            "bytes_total": {"type": "integer"},
            "resumed_from": {"type": "integer"},
            "percent": {"type": "number"},
            "started_by": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": _nullable("string", format="date-time"),
            "failed_check": _nullable("string"),
            "message": {"type": "string"},
        },
    },
    "DownloadQueued": {
        "type": "object",
        "required": ["version", "state", "status_url"],
        "properties": {
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["queued"]},
            "status_url": {"type": "string"},
        },
    },
    "Step": {
        "type": "object",
        "required": ["node", "position", "state", "started_at", "finished_at", "duration_seconds"],
        "properties": {
            "node": {"type": "string"},
            "position": {"type": "integer"},
            "state": {"type": "string"},
            "started_at": _nullable("string", format="date-time"),
            "finished_at": _nullable("string", format="date-time"),
            "duration_seconds": _nullable("number"),
            "phase_seconds": {"type": "object", "additionalProperties": {"type": "number"}},
            "message": {"type": "string"},
        },
    },
    "Rollout": {
        "type": "object",
        "required": ["id", "target_release", "state", "created_by", "created_at", "steps"],
        "properties": {
            "id": {"type": "string"},
            "target_release": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["planned", "running", "paused", "succeeded", "failed", "aborted"],
            },
            "created_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _nullable("string", format="date-time"),
            "finished_at": _nullable("string", format="date-time"),
            "plan": {"type": "object"},
            "executed_order": {"type": "array"},
            "probe_report": _nullable("object"),
            "steps": {"type": "array", "items": _ref("Step")},
        },
    },
    "LogLine": {
        "type": "object",
        "required": ["seq", "node", "stream", "text"],
        "properties": {
            "seq": {"type": "integer"},
            "node": _nullable("string"),
            "stream": {"type": "string"},
            "text": {"type": "string"},
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "at", "actor", "action", "target", "outcome", "source_ip", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "target": {"type": "string"},
            "outcome": {"type": "string", "enum": ["ok", "refused", "failed"]},
            "source_ip": _nullable("string"),
            "detail": {"type": "string"},
        },
    },
    "ImportStatus": {
        "type": "object",
        "required": ["import_id", "actor", "filename", "size", "state", "started_at", "checks", "done"],
        "properties": {
            "import_id": {"type": "string"},
            "actor": {"type": "string"},
            "filename": {"type": "string"},
            "size": {"type": "integer"},
            "state": {"type": "string", "enum": ["queued", "staging", "staged", "failed"]},
            "started_at": {"type": "string"},
            "finished_at": _nullable("string"),
            "version": _nullable("string"),
            "message": {"type": "string"},
            "checks": {"type": "array", "items": _ref("Check")},
            "done": {"type": "boolean"},
            "status_url": {"type": "string"},
        },
    },
    "Plan": {
        "type": "object",
        "required": ["version", "batches", "lines", "estimated_seconds", "preflight", "ready"],
        "properties": {
            "version": {"type": "string"},
            "batches": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "lines": {"type": "array", "items": {"type": "string"}},
            "estimated_seconds": {"type": "integer"},
            "preflight": {"type": "array", "items": _CHECK},
            "ready": {"type": "boolean"},
        },
    },
    "LockState": {
        "type": "object",
        "required": ["lock", "problem"],
        "properties": {
            "lock": {
                "type": ["object", "null"],
                "required": ["holder", "owner", "token", "since"],
                "properties": {
                    "holder": {"type": "string"},
                    "owner": {"type": "string"},
                    "token": {"type": "integer"},
                    "since": {"type": "string"},
                },
            },
            "problem": _nullable("string"),
        },
    },
    "Status": {
        "type": "object",
        "required": ["installed_release", "license", "nodes", "active_rollout", "problems"],
        "properties": {
            "installed_release": _nullable("string"),
            "license": _nullable("object"),
            "nodes": {"type": "array", "items": {"type": "object"}},
            "active_rollout": _nullable("string"),
            "problems": {"type": "array", "items": {"type": "string"}},
            "cluster_health": {"type": "string"},
            "observed_at": _nullable("string"),
        },
    },
}


def _get(
    summary: str, schema: dict[str, Any], *, parameters: list[Any] | None = None, errors: tuple[int, ...] = ()
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": _json(schema, "OK"), **_errors(401, *errors)},
        }
    }


def _post(
    summary: str,
    schema: dict[str, Any],
    *,
    body: dict[str, Any] | None,
    status: int = 200,
    parameters: list[Any] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary + " (operator)",
        "parameters": parameters or [],
        "responses": {str(status): _json(schema, "done"), **_errors(400, 401, 403, 413, *errors)},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": operation}


def _upload_body() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["bundle"],
        "properties": {"bundle": {"type": "string", "format": "binary"}},
    }
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _array(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": _ref(item)}}}


def _paths() -> dict[str, Any]:
    new_user = {
        "type": "object",
        "required": ["username", "role"],
        "properties": {
            "username": USERNAME_SCHEMA,
            "role": {"type": "string", "enum": ["viewer", "operator"]},
        },
    }
    created_user = {
        "allOf": [
            _ref("User"),
            {"type": "object", "required": ["password"], "properties": {"password": {"type": "string"}}},
        ]
    }
    token_request = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
    }
    token = {
        "type": "object",
        "required": ["username", "name", "token"],
        "properties": {
            "username": {"type": "string"},
            "name": {"type": "string"},
            "token": {"type": "string"},
        },
    }
    start_request = {
        "type": "object",
        "required": ["version"],
        "properties": {"version": {"type": "string", "minLength": 1}},
    }
    started = {
        "type": "object",
        "required": ["id", "url", "events_url"],
        "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "events_url": {"type": "string"}},
    }
    break_request = {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
    }
    paging = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        {
            "name": "before",
            "in": "query",
            "schema": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        },
    ]
    return {
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
        "/api/v1/whoami": _get("The token's user", _ref("User")),
        "/api/v1/status": _get("Installed release, license summary, nodes, active rollout", _ref("Status")),
        "/api/v1/releases": {
            **_get("Known releases with their verification checks", _array("releases", "Release")),
            "post": {
                "summary": "Import a bundle (multipart field 'bundle'); verified and staged by the worker; "
                "poll status_url (operator)",
                "parameters": [],
                "requestBody": _upload_body(),
                "responses": {
                    "202": _json(_ref("ImportStatus"), "accepted: queued for verification and staging"),
                    **_errors(400, 401, 403, 409, 413, 503),
                },
            },
        },
        "/api/v1/rollouts": {
            **_get(
                "Rollout history, newest first",
                _array("rollouts", "Rollout"),
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    }
                ],
                errors=(400,),
            ),
            **_post(
                "Start the rollout to a staged release (what the Update button does); 409 names the holder",
                started,
                body=start_request,
                status=202,
                errors=(409, 422, 503),
            ),
        },
        "/api/v1/rollouts/{rollout_id}/events": {
            "get": {
                "summary": "Server-Sent Events: log lines (id = sequence number; resumes after "
                "Last-Event-ID), state changes, and an end event; the stream's lifetime is bounded",
                "parameters": [
                    _ROLLOUT_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": -1, "maximum": 2**63 - 1},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404),
                },
            }
        },
        **{
            f"/api/v1/rollouts/{{rollout_id}}/{action}": _post(
                summary,
                _ref("Rollout"),
                body=None,
                parameters=[_ROLLOUT_ID],
                errors=(404, 409, 422, 503),
            )
            for action, summary in (
                ("pause", "Pause once the node in progress is whole (keeps the lock)"),
                ("resume", "Resume a paused rollout under the same id"),
                ("abort", "Abort once the node in progress is whole again"),
            )
        },
        "/api/v1/lock": _get("Who holds the cluster update lock (ZooKeeper)", _ref("LockState")),
        "/api/v1/lock/break": _post(
            "Break a stale cluster update lock by its fencing token",
            {"allOf": [_ref("LockState"), {"type": "object", "required": ["broken", "token"]}]},
            body=break_request,
            errors=(409, 422),
        ),
        "/api/v1/imports/{import_id}": _get(
            "One import's progress and, when done, each verification check",
            _ref("ImportStatus"),
            parameters=[_IMPORT_ID],
            errors=(404,),
        ),
        "/api/v1/releases/{version}": _get(
            "One release with its verification checks and its latest download's progress (null if none)",
            {
                "allOf": [
                    _ref("Release"),
                    {
                        "type": "object",
                        "required": ["download"],
                        "properties": {"download": {"oneOf": [_ref("Download"), {"type": "null"}]}},
                    },
                ]
            },
            parameters=[_VERSION],
            errors=(404,),
        ),
        "/api/v1/releases/{version}/download": _post(
            "Download a release the channel offers, then verify and stage it (by the worker)",
            _ref("DownloadQueued"),
            body=None,
            status=202,
            parameters=[_VERSION],
            errors=(404, 409, 503),
        ),
        "/api/v1/releases/{version}/plan": _get(
            "The plan to a release: node order and batches, estimated duration, preflight results",
            _ref("Plan"),
            parameters=[_VERSION],
            errors=(404, 422),
        ),
        "/api/v1/rollouts/{rollout_id}": _get(
            "One rollout with its steps", _ref("Rollout"), parameters=[_ROLLOUT_ID], errors=(404,)
        ),
        "/api/v1/rollouts/{rollout_id}/log": _get(
            "A rollout's log lines after a sequence number",
            _array("lines", "LogLine"),
            parameters=[
                _ROLLOUT_ID,
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                },
            ],
            errors=(400, 404),
        ),
        "/api/v1/audit": _get(
            "Audit log, newest first", _array("entries", "AuditEntry"), parameters=paging, errors=(400,)
        ),
        "/api/v1/users": {
            **_get("Users", _array("users", "User")),
            **_post(
                "Add a user; the answer carries its generated password, once",
                created_user,
                body=new_user,
                status=201,
                errors=(409,),
            ),
        },
        "/api/v1/users/{username}/disable": _post(
            "Disable a user", _ref("User"), body=None, parameters=[_USERNAME], errors=(404,)
        ),
        "/api/v1/users/{username}/enable": _post(
            "Enable a user", _ref("User"), body=None, parameters=[_USERNAME], errors=(404,)
        ),
        "/api/v1/users/{username}/tokens": {
            **_get(
                "A user's API tokens (never their secrets), revoked and expired ones included",
                _array("tokens", "ApiToken"),
                parameters=[_USERNAME],
                errors=(404,),
            ),
            **_post(
                "Create an API token for a user; the answer carries it, once",
                token,
                body=token_request,
                status=201,
                parameters=[_USERNAME],
                errors=(404,),
            ),
        },
        "/api/v1/users/{username}/tokens/{token_id}/revoke": _revoke_token(),
    }


def _revoke_token() -> dict[str, Any]:
    operation = _post(
        "Revoke an API token", _ref("ApiToken"), body=None, parameters=[_USERNAME, _TOKEN_ID], errors=(404,)
    )
    operation["post"]["summary"] = (
        "Revoke an API token: refused from the next request on; audited (an operator: anyone's token;"
        " a viewer: their own)"
    )
    return operation


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Corral update service",
            "version": API_VERSION,
            "description": "Authenticate with `Authorization: Bearer <token>` "
            "(`corral-updater token create`). Viewers read; operators also change.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": _paths(),
    }
