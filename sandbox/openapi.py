"""The OpenAPI 3.1 description of the sandbox: the recommendation route and every control route.

Served at ``GET /_sandbox/openapi.json`` and committed as docs/openapi/sandbox.json
(``python -m fashionai_pipeline.sandbox openapi`` prints it; a test keeps the two
equal). The recommendation body schema is the contract of :mod:`sandbox.contract`
written out; the settings schema comes from the shared pydantic models, so it
cannot drift from what the routes accept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from fashionai_pipeline.producers.recsettings import REC_TYPES, RecommendationSettings, TypeSettings
from fashionai_pipeline.sandbox.config import KNOB_SCHEMAS
from fashionai_pipeline.sandbox.contract import EVENT_TYPES

_REF: Final = "#/components/schemas/{model}"
_JSON: Final = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": _REF.format(model="Error")}}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


_OBJECT: Final[dict[str, Any]] = {"type": "object"}
_STOREFRONT_PARAMS: Final = [
    {
        "name": "storefront",
        "in": "query",
        "required": False,
        "description": "the storefront by name when no token header is sent (default: 'default')",
        "schema": {"type": "string"},
    },
    {
        "name": "X-FashionAI-APP-Token",
        "in": "header",
        "required": False,
        "description": "pick the storefront by its token instead of its name",
        "schema": {"type": "string"},
    },
]
_TYPE_PARAM: Final = {
    "name": "type",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(REC_TYPES)},
}
_RETRY_AFTER: Final = {
    "Retry-After": {"schema": {"type": "string"}, "description": "seconds or an HTTP date"}
}


def _schemas() -> dict[str, Any]:
    settings = TypeSettings.model_json_schema(ref_template=_REF)
    defs = settings.pop("$defs", {})
    every = RecommendationSettings.model_json_schema(ref_template=_REF)
    defs.update(every.pop("$defs", {}))

    def event(kinds: Sequence[str], item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["sessionId", "eventType", "data"],
            "properties": {
                "userId": {
                    "type": "string",
                    "minLength": 1,
                    "description": "optional; the logged-in shopper",
                },
                "sessionId": {"type": "string", "minLength": 1},
                "eventType": {"type": "string", "enum": list(kinds)},
                "data": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id"],
                    "properties": {"id": item},
                },
            },
        }

    item_events = [t for t in EVENT_TYPES if t != "customShelf"]
    product_or_category = {"type": "string", "minLength": 1, "description": "a product id or a category id"}
    return {
        **defs,
        "TypeSettings": settings,
        "RecommendationSettings": every,
        "Knobs": {"type": "object", "additionalProperties": False, "properties": KNOB_SCHEMAS},
        "ItemEvent": event(item_events, product_or_category),
        "ShelfEvent": event(["customShelf"], {"type": "string", "const": "", "description": 'always ""'}),
        "Event": {"oneOf": [_ref("ItemEvent"), _ref("ShelfEvent")]},
        "Products": {
            "type": "object",
            "additionalProperties": False,
            "required": ["products"],
            "properties": {"products": {"type": "array", "items": {"type": "string"}}},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "starts with the field it concerns"}},
        },
        "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
        "TypeView": {
            "type": "object",
            "required": ["storefront", "type", "settings"],
            "properties": {
                "storefront": {"type": "string"},
                "type": {"type": "string", "enum": list(REC_TYPES)},
                "settings": _ref("TypeSettings"),
            },
        },
        "SettingsView": {
            "type": "object",
            "required": ["storefront", "settings"],
            "properties": {"storefront": {"type": "string"}, "settings": _ref("RecommendationSettings")},
        },
        "RequestLog": {
            "type": "object",
            "required": ["count", "requests"],
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "requests": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


def _recommendation() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "recommend",
            "summary": "A recommendation event; answers the ranked product ids",
            "security": [{"appToken": []}],
            "parameters": [
                {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}}
            ],
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Event")}}},
            "responses": {
                "200": _ok(
                    "ranked product ids, best first; [] while there is not enough data", _ref("Products")
                ),
                "400": _error("the body broke the contract (the error names the field)"),
                "401": _error("missing or wrong X-FashionAI-APP-Token"),
                "403": _error("a browser Origin not authorised for this token"),
                "408": _error("the body did not arrive within the body timeout (the connection is closed)"),
                "413": _error("body larger than 64 KiB"),
                "415": _error("Content-Type is not application/json"),
                "429": {**_error("rate limited (injected, or over rate_limit_rps)"), "headers": _RETRY_AFTER},
                "500": _error("injected server error"),
                "502": _error("injected server error"),
                "503": _error("injected server error"),
                "504": _error("injected timeout"),
            },
        },
        "options": {
            "operationId": "preflight",
            "summary": "CORS preflight: 204 with CORS headers for an authorised Origin, else 403",
            "parameters": [
                {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
                {
                    "name": "Access-Control-Request-Method",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "204": {"description": "allowed (or not a preflight)"},
                "403": _error("not authorised"),
            },
        },
    }


def _settings_paths() -> dict[str, Any]:
    not_found = _error("no such storefront or type")
    return {
        "/_sandbox/settings": {
            "get": {
                "operationId": "getAllSettings",
                "parameters": _STOREFRONT_PARAMS,
                "responses": {"200": _ok("the three types", _ref("SettingsView")), "404": not_found},
            }
        },
        "/_sandbox/settings/{type}": {
            "parameters": [_TYPE_PARAM, *_STOREFRONT_PARAMS],
            "get": {
                "operationId": "getSettings",
                "responses": {"200": _ok("one type", _ref("TypeView")), "404": not_found},
            },
            "put": {
                "operationId": "saveSettings",
                "summary": "save one type (the whole type; missing fields take their cleared value)",
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("TypeSettings")}}},
                "responses": {
                    "200": _ok("saved", _ref("TypeView")),
                    "400": _error("a field broke the schema"),
                    "404": not_found,
                },
            },
            "delete": {
                "operationId": "clearSettings",
                "responses": {"200": _ok("cleared", _ref("TypeView")), "404": not_found},
            },
        },
    }


@functools.cache
def openapi() -> dict[str, Any]:
    """The description as a JSON-ready dict (built once; do not mutate)."""
    since = {"name": "since", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}
    paths: dict[str, Any] = {
        "/api/v1/products/protected/recommendation": _recommendation(),
        "/_sandbox/health": {
            "get": {"operationId": "health", "responses": {"200": _ok("up", _ref("Ok"))}},
        },
        "/_sandbox/requests": {
            "get": {
                "operationId": "listRequests",
                "parameters": [since],
                "responses": {"200": _ok("the request log", _ref("RequestLog")), "400": _error("bad since")},
            },
            "delete": {"operationId": "clearRequests", "responses": {"200": _ok("cleared", _ref("Ok"))}},
        },
        "/_sandbox/config": {
            "get": {
                "operationId": "getConfig",
                "responses": {"200": _ok("the knobs, tokens redacted", _OBJECT)},
            },
            "patch": {
                "operationId": "patchConfig",
                "requestBody": {"required": True, "content": {_JSON: {"schema": _OBJECT}}},
                "responses": {
                    "200": _ok("the knobs after", _OBJECT),
                    "400": _error("unknown knob or bad value"),
                },
            },
        },
        "/_sandbox/sessions": {
            "delete": {
                "operationId": "clearSessions",
                "responses": {"200": _ok("histories forgotten", _OBJECT)},
            },
        },
        "/_sandbox/reset": {
            "post": {
                "operationId": "reset",
                "responses": {"200": _ok("a fresh start, knobs aside", _OBJECT)},
            },
        },
        **_settings_paths(),
        "/_sandbox/explain": {
            "post": {
                "operationId": "explain",
                "parameters": _STOREFRONT_PARAMS,
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Event")}}},
                "responses": {
                    "200": _ok("the ranking with its reasons; records nothing", _OBJECT),
                    "400": _error("the body broke the contract"),
                    "404": _error("no such storefront"),
                },
            }
        },
        "/_sandbox/catalog": {
            "get": {"operationId": "catalog", "responses": {"200": _ok("products per category", _OBJECT)}},
        },
        "/_sandbox/products/{id}": {
            "get": {
                "operationId": "product",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("one product", _OBJECT), "404": _error("not in the catalog")},
            }
        },
        "/_sandbox/openapi.json": {
            "get": {"operationId": "openapi", "responses": {"200": _ok("this description", _OBJECT)}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fashionai-pipeline sandbox",
            "version": "1",
            "description": "A local, Fashion.AI-compatible recommendation API with /_sandbox/ control "
            "routes (sandbox only). See docs/SANDBOX.md.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "appToken": {"type": "apiKey", "in": "header", "name": "X-FashionAI-APP-Token"}
            },
        },
    }
