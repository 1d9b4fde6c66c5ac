"""The service's OpenAPI 3.1 description, as data.

Served at GET /openapi.json and committed as docs/openapi/service.json (a test
checks that the two are equal: `python -m fashionai_pipeline.producers.service.openapi`
prints it). Limits in it come from the running service's settings, so the
committed copy is the one with the default settings.
"""

from __future__ import annotations

import json
from typing import Any

from fashionai_pipeline.producers.event import EVENT_TYPES, MAX_LEN

_ID = {"type": "string", "maxLength": MAX_LEN}
_NONEMPTY = {"type": "string", "minLength": 1, "maxLength": MAX_LEN}
MAX_NATIVE = 10_000  # ids in one native list
VIEW_WAIT_MS = 150  # POST /v1/views waits this long when the caller does not say


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def spec(*, max_events: int = 1_000, max_wait_ms: int = 1_000) -> dict[str, Any]:
    """The OpenAPI document for these limits. Pure."""
    error_object: dict[str, Any]
    event: dict[str, Any]
    wait: dict[str, Any]
    wait = {"type": "integer", "minimum": 0, "maximum": max_wait_ms, "default": 0}
    event_type = {"type": "string", "enum": list(EVENT_TYPES)}
    event = {
        "type": "object",
        "description": 'One Fashion.AI event (docs/UPSTREAM.md); data.id is "" for customShelf only.',
        "required": ["sessionId", "eventType", "data"],
        "additionalProperties": False,
        "if": {"properties": {"eventType": {"const": "customShelf"}}},
        "then": {"properties": {"data": {"properties": {"id": {"const": ""}}}}},
        "else": {"properties": {"data": {"properties": {"id": {"minLength": 1}}}}},
        "properties": {
            "userId": _NONEMPTY,
            "sessionId": _NONEMPTY,
            "eventType": event_type,
            "data": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {"id": _ID},
            },
        },
    }
    native = {"type": "array", "items": _ID, "maxItems": MAX_NATIVE}
    page_size = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_NATIVE,
        "description": "At most this many products; one the stock check removes gives way to the next.",
    }
    stock = {
        "type": "object",
        "description": (
            "Units in stock per product id, for this page's stock check (instead of the service's own):"
            " an id with 0 or fewer units, or not in the map, is removed (docs/SERVICE.md)."
        ),
        "maxProperties": MAX_NATIVE,
        "propertyNames": _ID,
        "additionalProperties": {"type": "integer"},
    }
    facts = {
        "type": "object",
        "description": (
            "Per product id, what the local recommendation-settings filters (FASHIONAI_LOCAL_FILTERS)"
            " check the ranked products against (docs/SERVICE.md)."
        ),
        "maxProperties": MAX_NATIVE,
        "propertyNames": _ID,
        "additionalProperties": _ref("ProductFacts"),
    }
    product_facts = {
        "type": "object",
        "required": ["price"],
        "additionalProperties": False,
        "properties": {
            "price": {
                "description": "What the shopper pays now, in R$ (after any discount).",
                "oneOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,2})?$"},
                ],
            },
            "discounted": {"type": "boolean", "default": False},
            "stock": {
                "type": "object",
                "description": "Units per size the product is made in (0 included).",
                "additionalProperties": {"type": "integer"},
            },
        },
    }
    served = {
        "type": "object",
        "required": ["products", "source", "age_ms"],
        "properties": {
            "products": {"type": "array", "items": {"type": "string"}},
            "source": {
                "type": "string",
                "enum": ["fresh", "cached", "crowd", "native", "fallback", "holdout"],
            },
            "age_ms": {"type": ["integer", "null"], "minimum": 0},
            "message_id": {"type": ["string", "null"]},
        },
    }
    error_object = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
        },
    }
    problem = {"type": "object", "required": ["error"], "properties": {"error": error_object}}
    ingest_result = {
        "type": "object",
        "required": ["accepted", "ids", "refused", "failed"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "ids": {
                "type": "array",
                "description": "Per event, in request order: its message id when published, else null.",
                "items": {"type": ["string", "null"]},
            },
            "refused": {
                "type": "array",
                "description": "Invalid events: not published; fix and resend these only.",
                "items": {
                    "type": "object",
                    "required": ["index", "field", "message"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
            "failed": {
                "type": "array",
                "description": (
                    "Valid events the broker did not take: resend them (publish_unknown: maybe queued)."
                ),
                "items": {
                    "type": "object",
                    "required": ["index", "code"],
                    "properties": {"index": {"type": "integer", "minimum": 0}, "code": {"type": "string"}},
                },
            },
            "error": error_object,
        },
    }
    read_query = [
        {"name": "eventType", "in": "query", "required": True, "schema": event_type},
        {
            "name": "id",
            "in": "query",
            "required": False,
            "schema": _ID,
            "description": 'data.id ("" or absent for customShelf)',
        },
        {"name": "sessionId", "in": "query", "required": True, "schema": _NONEMPTY},
        {"name": "userId", "in": "query", "required": False, "schema": _NONEMPTY},
        {"name": "wait_ms", "in": "query", "required": False, "schema": wait},
        {"name": "page_size", "in": "query", "required": False, "schema": page_size},
        {
            "name": "shopper",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "maxLength": 100},
            "description": "The shopper signature; required with a read key (docs/SERVICE.md).",
        },
    ]
    read_body = {
        "type": "object",
        "required": ["eventType", "sessionId"],
        "additionalProperties": False,
        "if": {"properties": {"eventType": {"const": "customShelf"}}},
        "then": {"properties": {"id": {"const": ""}}},
        "else": {"required": ["id"], "properties": {"id": {"minLength": 1}}},
        "properties": {
            "eventType": event_type,
            "id": _ID,
            "sessionId": _NONEMPTY,
            "userId": _NONEMPTY,
            "native": native,
            "wait_ms": wait,
            "shopper": {"type": "string", "maxLength": 100},
            "page_size": page_size,
            "stock": stock,
            "facts": facts,
        },
    }
    view_body = {
        "type": "object",
        "required": ["event", "native"],
        "additionalProperties": False,
        "properties": {
            "event": _ref("Event"),
            "native": native,
            "wait_ms": {**wait, "default": min(VIEW_WAIT_MS, max_wait_ms)},
            "page_size": page_size,
            "stock": stock,
            "facts": facts,
        },
    }
    auth_errors = {
        "401": _error("No valid key (Authorization: Bearer <key>)."),
        "403": _error(
            "The key may not do this (a read key on ingest; a read key without a valid shopper signature)."
        ),
    }
    bad = {
        "400": _error("The body is not JSON, or not a whole gzip stream, or cut short by the connection."),
        "408": _error("The body did not arrive in full within FASHIONAI_SERVE_BODY_TIMEOUT."),
        "413": _error("The body, or the list of events, is larger than the service accepts (decoded too)."),
        "415": _error(
            "The body is not sent as Content-Type: application/json (or without one), or with a"
            " Content-Encoding other than identity or gzip."
        ),
        "422": _error("A field is invalid; `error.field` names it."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fashionai-pipeline service",
            "version": "1",
            "description": (
                "Storefront events in, rankings out, for any backend (docs/SERVICE.md). Every GET"
                " is answered to HEAD as well, without the body."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": event,
                "Served": served,
                "Error": problem,
                "IngestResult": ingest_result,
                "ProductFacts": product_facts,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": 'Publish one event, or {"events": [...]} (ingest key).',
                    "operationId": "publishEvents",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("Event"),
                                        {
                                            "type": "object",
                                            "required": ["events"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "events": {
                                                    "type": "array",
                                                    "items": _ref("Event"),
                                                    "minItems": 1,
                                                    "maxItems": max_events,
                                                }
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(_ref("IngestResult"), "Every event published."),
                        "207": _json(
                            _ref("IngestResult"),
                            "Some published, some refused or failed: see refused/failed.",
                        ),
                        **auth_errors,
                        **bad,
                        "503": _json(_ref("IngestResult"), "The broker took none of the valid events."),
                    },
                }
            },
            "/v1/rankings": {
                "get": {
                    "summary": "The cached ranking for a shopper and page (ingest or read key).",
                    "operationId": "getRanking",
                    "parameters": read_query,
                    "responses": {
                        "200": _json(_ref("Served"), "The ranking, or [] with source native."),
                        "400": _error("A query parameter is given more than once; `error.field` names it."),
                        **auth_errors,
                        "422": bad["422"],
                    },
                },
                "post": {
                    "summary": "The same read, merged with the page's native list.",
                    "operationId": "orderRanking",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": read_body}}},
                    "responses": {
                        "200": _json(_ref("Served"), "The page's ids in the order to render."),
                        **auth_errors,
                        **bad,
                    },
                },
            },
            "/v1/views": {
                "post": {
                    "summary": "Publish a page view and wait up to wait_ms for its ranking (ingest key).",
                    "operationId": "viewPage",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": view_body}}},
                    "responses": {
                        "200": _json(
                            _ref("Served"),
                            "The page's ids in the order to render; message_id is the event's.",
                        ),
                        **auth_errors,
                        **bad,
                        "503": _error("The broker did not take the event: render the native order."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "The reads' counters: sources served, read outcomes, checks (ingest key).",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **auth_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is up.",
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "Up.")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The broker and the cache answer.",
                    "operationId": "ready",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "Ready."),
                        "503": _json({"type": "object"}, "The broker or the cache does not answer."),
                    },
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(spec()), end="")
