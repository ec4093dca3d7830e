"""The JSON Schema of the catalog file that `gwctl catalog export` writes and `import` reads."""

from __future__ import annotations

from gwctl.core.config import CAPABILITIES, PRICE_KINDS

_PRICE = {
    "description": 'USD per unit, as a string (exact) in decimal or exponent notation, e.g. "0.000003" or "3e-6".',
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"},
        {"type": "number", "minimum": 0},
    ],
}


def catalog_json_schema() -> dict:
    entry = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "display_name": {"type": "string"},
            "context_size": {"type": "integer", "minimum": 1, "description": "Context window in tokens."},
            "max_output": {"type": "integer", "minimum": 1, "description": "Maximum output tokens per request."},
            "supported_params": {"type": "array", "items": {"type": "string"}, "description": "Advisory only."},
            "prices": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k: _PRICE for k in PRICE_KINDS},
            },
            "capabilities": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k: {"type": "boolean"} for k in CAPABILITIES},
                "description": "Absent = unset (never rejects).",
            },
            "price_sets": {
                "type": "array",
                "description": "Prices in force from valid_from (UTC) until the next set's; the undated prices "
                "apply before the first.",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["valid_from"],
                    "properties": {
                        "valid_from": {
                            "type": "string",
                            "format": "date-time",
                            "description": "e.g. 2026-12-01T00:00:00Z",
                        },
                        **{k: _PRICE for k in PRICE_KINDS},
                    },
                },
            },
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gwctl.dev/schemas/catalog-1.json",
        "title": "gwctl catalog",
        "type": "object",
        "additionalProperties": False,
        "required": ["catalog"],
        "properties": {
            "schema": {"const": 1},
            "catalog": {
                "type": "object",
                "description": "Entries keyed by SOURCE/MODEL_ID (split at the first '/').",
                "propertyNames": {"pattern": "^[^/]+/.+$"},
                "additionalProperties": entry,
            },
        },
    }
