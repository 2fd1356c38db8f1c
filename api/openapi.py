"""The OpenAPI document tells the truth about errors: FastAPI documents every 422 as its own
`HTTPValidationError` (`{"detail": [...]}`), while labtrain answers with its envelope
(api/errors.py): `{"error": "ValidationError", "detail": "<one line>", "errors": [...]}`. A
body that is not text (invalid UTF-8) gets FastAPI's 400 before any validation, on every
operation that takes a JSON body; and every operation may answer 422 for its request line (an
unknown query parameter, a NUL character: api/request_rules.py): both are documented too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

VALIDATION_ENVELOPE: dict[str, Any] = {
    "title": "ValidationErrorEnvelope",
    "type": "object",
    "required": ["error", "detail", "errors"],
    "properties": {
        "error": {"type": "string", "description": "ValidationError"},
        "detail": {"type": "string", "description": "the first problems, one line: `body.epochs: ...`"},
        "errors": {
            "type": "array",
            "description": "one item per problem: where (`loc`), what (`msg`), and its `type`",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                    "input": {},
                },
            },
        },
    },
}


ENVELOPE: dict[str, Any] = {
    "title": "ErrorEnvelope",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
UNREADABLE_BODY: dict[str, Any] = {
    "description": "the body cannot be read as JSON text, e.g. it is not UTF-8 (`BadRequest`)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
}


REQUEST_LINE: dict[str, Any] = {
    "description": "a query parameter the operation does not take, or a NUL character in the path or the query "
    "(`ValidationError`, `errors[].loc` names it)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}


def operation_id(route: APIRoute) -> str:
    """A short operationId a generated client names its function by: the handler's name, with the
    house `read_` (STYLE.md) said as generators and their users say it, `get_` (`get_experiment`,
    `get_metrics`; `create_experiment`, `list_experiments`, `cancel_experiment` as they are)."""
    name = route.name
    return "get_" + name.removeprefix("read_") if name.startswith("read_") else name


def check_operation_ids(schema: dict[str, Any]) -> None:
    """Two handlers of one name would give a generated client two functions of one name."""
    seen: dict[str, str] = {}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            ident = operation.get("operationId")
            if ident is None:
                continue
            if ident in seen:
                raise RuntimeError(f"operationId {ident!r} of {method.upper()} {path} is also {seen[ident]}'s")
            seen[ident] = f"{method.upper()} {path}"


def document_error_envelope(app: FastAPI) -> None:
    """Build the schema once, with FastAPI's 422 schema replaced by the envelope's, and the 400
    of an unreadable JSON body on the operations that take one."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = VALIDATION_ENVELOPE
            schemas["ErrorEnvelope"] = ENVELOPE
            schemas.setdefault("HTTPValidationError", VALIDATION_ENVELOPE)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    if "application/json" in operation.get("requestBody", {}).get("content", {}):
                        responses.setdefault("400", UNREADABLE_BODY)
                    responses.setdefault("422", REQUEST_LINE)  # api/request_rules.py: on every route
            check_operation_ids(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
