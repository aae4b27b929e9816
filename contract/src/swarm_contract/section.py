"""The base of every section of the spec: camelCase in YAML, snake_case in Python, unknown fields
refused (like the CRD's structural schema), frozen once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
