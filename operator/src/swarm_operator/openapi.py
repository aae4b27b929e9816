"""Pydantic models as Kubernetes structural schemas (OpenAPI v3.0): the conversion crdgen uses for
the CRD's spec and status. Field descriptions come from the `#:` comment lines above each field in
the contract's models, so the docs of a field are written once, beside it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from swarm_contract import records as records_module
from swarm_contract import spec as spec_module


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """`#:` comment lines directly above each field of a model class, by field name."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"^([a-z_][a-z0-9_]*)\s*:", stripped)
        if match and pending:
            out[match.group(1)] = " ".join(pending)
        pending = []
    return out


def descriptions(model_name: str) -> dict[str, str]:
    for module in (spec_module, records_module):
        model = getattr(module, model_name, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return {to_camel(name): text for name, text in field_comments(model).items()}
    return {}


def one_line(text: str) -> str:
    return " ".join(text.split())


def convert(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node as a structural OpenAPI v3.0 node."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        model = convert_model(defs[name], defs, name)
        if isinstance(schema.get("default"), dict):
            model["default"] = {}
        if "description" in schema:
            model["description"] = one_line(schema["description"])
        return model
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1 or len(branches) == len(schema["anyOf"]):
            raise ValueError(f"cannot express {schema} in a structural schema")
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        return convert({**branches[0], **merged}, defs)
    kind = schema["type"]
    out: dict[str, Any] = {"type": kind}
    if "description" in schema:
        out["description"] = one_line(schema["description"])
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values and not schema.get("properties"):
            out["additionalProperties"] = convert(values, defs)  # a typed map, e.g. dict[str, int]
        elif values is True or not schema.get("properties"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            return convert_model(schema, defs, "")
    if kind == "array":
        out["items"] = convert(schema["items"], defs)
    if "enum" in schema:
        out["enum"] = list(schema["enum"])
    for length in ("minLength", "maxLength"):
        if length in schema:
            out[length] = schema[length]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if exclusive in schema:
            out[bound] = schema[exclusive]
            out[exclusive] = True
        elif bound in schema:
            out[bound] = schema[bound]
    if schema.get("default") is not None and kind != "object":
        out["default"] = schema["default"]
    return out


def convert_model(schema: dict[str, Any], defs: dict[str, Any], name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    if "description" in schema:
        out["description"] = one_line(schema["description"])
    comments = descriptions(name)
    props: dict[str, Any] = {}
    for prop, sub in schema["properties"].items():
        converted = convert(sub, defs)
        if prop in comments and "description" not in converted:
            converted = {"description": comments[prop], **converted}
        props[prop] = converted
    out["properties"] = props
    if schema.get("required"):
        out["required"] = list(schema["required"])
    return out
