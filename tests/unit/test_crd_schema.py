"""The CRD in crds/ and the pydantic SwarmSpec describe the same spec, and the file is generated."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SwarmSpec
from swarm_operator import crd_rules, crdgen

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "swarmtraining.yaml"
CHART_COPY = ROOT / "charts" / "ncrsh-swarm" / "files" / "swarmtraining.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text())


@pytest.fixture(scope="module")
def crd_spec(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _model_node(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema node with $ref inlined and `X | None` reduced to X (None = field left out)."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        (branch,) = [b for b in node["anyOf"] if b.get("type") != "null"]
        return {**branch, **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _bounds(node: dict[str, Any], openapi: bool) -> dict[str, tuple[float, bool]]:
    """{"min"|"max": (value, exclusive)} in either dialect (JSON Schema 2020-12 or OpenAPI 3.0)."""
    out: dict[str, tuple[float, bool]] = {}
    for side, bound, exclusive in (
        ("min", "minimum", "exclusiveMinimum"),
        ("max", "maximum", "exclusiveMaximum"),
    ):
        if openapi:
            if bound in node:
                out[side] = (node[bound], bool(node.get(exclusive, False)))
        elif exclusive in node:
            out[side] = (node[exclusive], True)
        elif bound in node:
            out[side] = (node[bound], False)
    return out


def _compare(model: dict[str, Any], crd: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    model = _model_node(model, defs)
    problems: list[str] = []
    if "properties" in model:
        if crd.get("type") != "object":
            return [f"{path}: CRD type {crd.get('type')} is not object"]
        if set(model["properties"]) != set(crd.get("properties", {})):
            problems.append(
                f"{path}: fields {sorted(model['properties'])} != {sorted(crd.get('properties', {}))}"
            )
        if sorted(model.get("required", [])) != sorted(crd.get("required", [])):
            problems.append(f"{path}: required {model.get('required')} != {crd.get('required')}")
        if "default" in model and crd.get("default") != {}:
            problems.append(f"{path}: a section with defaults needs `default: {{}}` in the CRD")
        for name, sub in model["properties"].items():
            if name in crd.get("properties", {}):
                problems += _compare(sub, crd["properties"][name], defs, f"{path}.{name}")
        return problems
    kind = model.get("type")
    if kind == "object":  # a free-form mapping: the only place unknown fields are kept
        if crd.get("x-kubernetes-preserve-unknown-fields") is not True:
            problems.append(f"{path}: free-form mapping must preserve unknown fields")
        return problems
    if crd.get("type") != kind:
        problems.append(f"{path}: type {kind} != {crd.get('type')}")
    if model.get("enum") != crd.get("enum"):
        problems.append(f"{path}: enum {model.get('enum')} != {crd.get('enum')}")
    if _bounds(model, openapi=False) != _bounds(crd, openapi=True):
        problems.append(f"{path}: bounds {_bounds(model, False)} != {_bounds(crd, True)}")
    model_default, crd_default = model.get("default"), crd.get("default")
    if model_default != crd_default or isinstance(model_default, bool) != isinstance(crd_default, bool):
        problems.append(f"{path}: default {model_default!r} != {crd_default!r}")
    if kind == "array":
        problems += _compare(model["items"], crd["items"], defs, f"{path}[]")
    return problems


def test_crd_and_model_agree_on_every_field(crd_spec: dict[str, Any]) -> None:
    schema = SwarmSpec.model_json_schema(by_alias=True)
    assert _compare(schema, crd_spec, schema["$defs"], "spec") == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("workers", "replicas"), {"type": "integer", "minimum": 1, "maximum": 1024, "default": 8}),
        (("compression", "ratio"), {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}),
        (("training", "minPeers"), {"type": "integer", "minimum": 1}),
        (("robustness", "rule"), {"type": "string", "default": "mean"}),
        (("task", "options"), {"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ],
    ids=["int-bounds-default", "exclusive-min", "optional-has-no-default", "enum-default", "free-form"],
)
def test_crd_field_examples(
    crd_spec: dict[str, Any], path: tuple[str, ...], expected: dict[str, Any]
) -> None:
    node = crd_spec
    for part in path:
        node = node["properties"][part]
    assert {k: node[k] for k in expected} == expected


def test_the_comparison_catches_drift(crd_spec: dict[str, Any]) -> None:
    schema = SwarmSpec.model_json_schema(by_alias=True)
    drifted = yaml.safe_load(yaml.safe_dump(crd_spec))
    drifted["properties"]["workers"]["properties"]["replicas"]["maximum"] = 2048
    del drifted["properties"]["compression"]["properties"]["selector"]
    problems = _compare(schema, drifted, schema["$defs"], "spec")
    assert any("replicas: bounds" in p for p in problems)
    assert any("spec.compression: fields" in p for p in problems)


def test_committed_crd_is_the_generator_output() -> None:
    assert CRD_FILE.read_text() == crdgen.render(), (
        "run: python -m swarm_operator.crdgen > crds/swarmtraining.yaml"
    )


def test_chart_copy_equals_crds_file() -> None:
    assert CHART_COPY.read_bytes() == CRD_FILE.read_bytes(), f"cp {CRD_FILE} {CHART_COPY}"


def test_crd_identity(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    (version,) = spec["versions"]
    assert (crd["metadata"]["name"], spec["group"], version["name"]) == (
        f"swarmtrainings.{API_GROUP}",
        API_GROUP,
        API_VERSION,
    )
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["shortNames"] == ["swt"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Round", "Loss", "Accuracy", "Ready", "Age"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                out += _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    """Every node has a type; preserve-unknown-fields only on task.options; no additionalProperties: false."""
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert "type" in node, path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path == ".spec.task.options", path


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("spec", "self.training.minPeers <= self.workers.replicas"),
        ("spec", "b.worker < self.workers.replicas"),
        ("spec", "oldSelf.workers"),
        ("root", "self.metadata.name.matches"),
    ],
    ids=["min-peers", "byzantine-rank", "immutable-tree", "dns-name"],
)
def test_cel_rules(crd: dict[str, Any], where: str, fragment: str) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = root["properties"]["spec"] if where == "spec" else root
    rules = [r["rule"] for r in node["x-kubernetes-validations"]]
    assert any(fragment in r for r in rules), rules


def test_byzantine_ranks_are_a_list_map(crd_spec: dict[str, Any]) -> None:
    byz = crd_spec["properties"]["simulation"]["properties"]["byzantine"]
    assert (byz["x-kubernetes-list-type"], byz["x-kubernetes-list-map-keys"]) == ("map", ["worker"])


@pytest.mark.parametrize(
    "name",
    ["digits", "a", "x" * crd_rules.MAX_NAME_LENGTH],
    ids=["word", "one-letter", "longest"],
)
def test_longest_job_name_gives_legal_pod_host_names(name: str) -> None:
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", f"{name}-worker-1023")
    assert len(f"{name}-worker-1023") <= 63


def test_field_comments_become_descriptions(crd_spec: dict[str, Any]) -> None:
    sync = crd_spec["properties"]["training"]["properties"]["syncEvery"]
    assert sync["description"] == "Local steps per round (H). 1 is plain gradient exchange."
