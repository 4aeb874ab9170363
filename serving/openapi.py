"""The OpenAPI document, made true to the model being served.

FastAPI derives the schema from the pydantic models, which cannot know the champion's signature: this adds it
(row width, the accepted value range, the batch limit, the feature names, a table model's named columns and their
types, the classes /feedback accepts) and the rule that exactly one input form is sent, so a client generated from
the document, or a property-based test, sends what the gateway accepts. Rebuilt when the champion changes (a reload
may change the contract).
"""

from __future__ import annotations

import copy

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from monitoring.vocabulary import CHAMPION
from serving.validation import FLOAT32_MAX


def _rows(width: int | None, max_rows: int, bound: float) -> dict:
    number = {"type": "number", "minimum": -bound, "maximum": bound}
    row = {"type": "array", "items": number}
    if width is not None:
        row.update(minItems=width, maxItems=width)
    return {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}


_CELL = {"double": "number", "string": "string", "boolean": "boolean"}


def _records(names: list[str] | None, table: list[dict] | None, max_rows: int, bound: float) -> dict | None:
    """Named rows: the model's columns as properties (a table model: by type, optional ones nullable)."""
    if table is not None:
        columns = {c["name"]: _cell(c, bound) for c in table}
        required = [c["name"] for c in table if not c["optional"]]
    elif names:
        columns = {n: {"type": "number", "minimum": -bound, "maximum": bound} for n in names}
        required = list(names)
    else:
        return None
    row = {"type": "object", "properties": columns, "required": required, "additionalProperties": False}
    return {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}


def _cell(column: dict, bound: float) -> dict:
    kind = _CELL.get(column["type"], "string")
    cell: dict = {"type": [kind, "null"] if column["optional"] else kind}
    if kind == "number":
        cell.update(minimum=-bound, maximum=bound)
    return cell


def _table_rows(table: list[dict], max_rows: int, bound: float) -> dict:
    """A table model's rows in its column order: one typed value per column (JSON Schema 2020-12 prefixItems)."""
    row = {"type": "array", "prefixItems": [_cell(c, bound) for c in table], "minItems": len(table),
           "maxItems": len(table)}
    return {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}


def _patch(spec: dict, width: int | None, names: list[str] | None, classes: list | None, max_batch: int,
           bound: float, table: list[dict] | None = None) -> dict:
    schemas = spec["components"]["schemas"]
    request = schemas["PredictRequest"]
    props = request["properties"]
    for form in ("inputs", "instances"):
        rows = _rows(width, max_batch, bound) if table is None else _table_rows(table, max_batch, bound)
        props[form] = {**rows, "description": props[form].get("description", "")}
    props["dataframe_split"] = {"$ref": "#/components/schemas/DataFrameSplit"}
    named = _records(names, table, max_batch, bound)
    for form in ("records", "dataframe_records"):
        if form in props and named is not None:
            props[form] = {**named, "description": props[form].get("description", "")}
    request["oneOf"] = [{"required": [form]} for form in
                        ("inputs", "instances", "dataframe_split", "records", "dataframe_records") if form in props]
    if width is not None:
        request["examples"] = [{"inputs": [[0.0] * width], "request_id": "order-42"}]
    split = schemas["DataFrameSplit"]["properties"]
    if table is None:
        split["data"] = {**_rows(width, max_batch, bound), "description": split["data"].get("description", "")}
    if names:
        split["columns"] = {"type": "array", "items": {"type": "string", "enum": list(names)},
                            "minItems": len(names), "maxItems": len(names), "uniqueItems": True,
                            "description": "the model's feature names, each exactly once (any order)"}
    if classes:
        feedback = schemas["FeedbackItem"]["properties"]
        label = {"enum": list(classes), "description": "one of the model's classes"}
        feedback["label"] = label
        feedback["labels"] = {"type": "array", "items": label, "minItems": 1, "maxItems": max_batch,
                              "description": "one of the model's classes per row, in row order"}
        schemas["FeedbackItem"]["oneOf"] = [{"required": ["label"]}, {"required": ["labels"]}]
    return spec


def _open_rows(spec: dict) -> dict:
    """Named rows may carry columns the model does not take (``unknown_columns=ignore``: answered, ignored)."""
    props = spec["components"]["schemas"]["PredictRequest"]["properties"]
    for form in ("records", "dataframe_records"):
        items = props.get(form, {}).get("items")
        if isinstance(items, dict) and items.get("additionalProperties") is False:
            items["additionalProperties"] = True
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`_patch`-ed documents from ``app.openapi()`` (cached per champion version)."""
    cache: dict = {}

    def openapi() -> dict:
        settings = app.state.settings
        gateway = getattr(app.state, "gateway", None)
        champion = gateway.models.get(CHAMPION) if gateway is not None else None
        key = champion.version if champion is not None else None
        if cache.get("key", object()) != key or "spec" not in cache:
            base = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            width = champion.n_features if champion is not None else None
            names = champion.feature_names if champion is not None else None
            classes = champion.classes if champion is not None else None
            table = champion.input_schema if champion is not None else None
            bound = min(settings.max_abs_input, FLOAT32_MAX)
            spec = _patch(copy.deepcopy(base), width, names, classes, settings.max_batch, bound, table)
            cache.update(key=key, spec=_open_rows(spec) if settings.unknown_columns == "ignore" else spec)
        return cache["spec"]

    app.openapi = openapi
