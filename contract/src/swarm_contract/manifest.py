"""Reading a SwarmTraining: a whole manifest (apiVersion, kind, metadata, spec) from YAML, its spec
validated by `swarm_contract.spec.SwarmSpec`, every failure one SpecError line naming the field
(what `swarm run bad.yaml` prints and the operator reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SpecError, SwarmSpec


class Manifest(BaseModel):
    """A whole `SwarmTraining` object: only what `swarm run` needs of its metadata."""

    model_config = ConfigDict(frozen=True)
    name: str
    namespace: str
    spec: SwarmSpec


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def parse_spec(spec: Any, *, where: str = "spec") -> SwarmSpec:
    """Validate a manifest's `spec` mapping; raise SpecError with one line naming the field."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: must be a mapping, got {type(spec).__name__}")
    try:
        return SwarmSpec.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        loc = _location(tuple(first["loc"]))
        field = f"{where}.{loc}" if loc else where
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise SpecError(f"{field}: {msg}{more}") from e


def parse_manifest(doc: Any) -> Manifest:
    """Validate a whole SwarmTraining object (apiVersion, kind, metadata.name, spec)."""
    if not isinstance(doc, dict):
        raise SpecError("manifest: must be a YAML mapping")
    expected = f"{API_GROUP}/{API_VERSION}"
    if doc.get("apiVersion") != expected:
        raise SpecError(f"apiVersion: expected {expected!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != KIND:
        raise SpecError(f"kind: expected {KIND!r}, got {doc.get('kind')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError("metadata.name: required")
    namespace = meta.get("namespace", "default") if isinstance(meta, dict) else "default"
    return Manifest(name=name, namespace=str(namespace), spec=parse_spec(doc.get("spec")))


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; every failure is a one-line SpecError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SpecError(f"{p}: cannot read: {e.strerror}") from e
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{p}: not valid YAML{at}") from e
    swarm_docs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(swarm_docs) != 1:
        raise SpecError(f"{p}: expected exactly one {KIND} document, found {len(swarm_docs)}")
    return parse_manifest(swarm_docs[0])


def spec_to_dict(spec: SwarmSpec) -> dict[str, Any]:
    """The spec as the camelCase mapping a manifest would hold (defaults filled in)."""
    return spec.model_dump(by_alias=True, mode="json")
