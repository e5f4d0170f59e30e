"""The model catalog: one pydantic class per public model; everything public is generated from them.

Adding a model is adding a class here: `/v1/models`, `/v1/model-schema`, `/v1/model-docs` and the
request validation of `POST /v1/videos/generations` all read `MODELS`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vidgate.catalog.base import VideoRequest, to_invalid_request
from vidgate.catalog.pixverse import PixverseV6
from vidgate.catalog.vidu import ViduQ3, ViduQ3Mix
from vidgate.errors import InvalidRequest

MODELS: dict[str, type[VideoRequest]] = {
    "viduq3": ViduQ3,
    "viduq3-mix": ViduQ3Mix,
    "pixverse-v6": PixverseV6,
}

__all__ = ["MODELS", "PixverseV6", "VideoRequest", "ViduQ3", "ViduQ3Mix", "get", "parse"]


def get(model: str) -> type[VideoRequest]:
    try:
        return MODELS[model]
    except KeyError:
        raise InvalidRequest("model_unknown", param="model", model=model, models=", ".join(MODELS)) from None


def parse(body: Any) -> VideoRequest:
    """Validate a submit body; every failure is an `InvalidRequest` naming the field and the rule."""
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", detail="expected a JSON object")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model_required", param="model")
    if not isinstance(model, str):
        raise InvalidRequest("type_string", param="model")
    cls = get(model)
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        raise to_invalid_request(cls, exc) from None


def input_schema(model: str) -> dict[str, Any]:
    schema = get(model).model_json_schema()
    schema.setdefault("title", model)
    return schema


def documentation(model: str) -> str:
    """Markdown for /v1/model-docs, generated from the class and its JSON Schema."""
    cls = get(model)
    schema = cls.model_json_schema()
    required = set(schema.get("required", []))
    lines = [
        f"# {model}",
        "",
        cls.summary,
        "",
        "## Parameters",
        "",
        "| name | type | required | default | rules |",
        "|---|---|---|---|---|",
    ]
    for name, prop in schema.get("properties", {}).items():
        lines.append(
            f"| `{name}` | {_type_of(prop)} | {'yes' if name in required else 'no'} | "
            f"{_default_of(prop)} | {_rules_of(prop)} |"
        )
    lines += ["", "## Modes", "", ", ".join(f"`{m}`" for m in cls.modes), "", cls.notes.strip(), ""]
    return "\n".join(lines)


def _variants(prop: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]


def _type_of(prop: dict[str, Any]) -> str:
    kinds = []
    for v in _variants(prop):
        kind = v.get("type") or ("string" if "enum" in v or "const" in v else "any")
        if kind == "array":
            kind = f"array of {v.get('items', {}).get('type', 'any')}"
        kinds.append(kind)
    return " or ".join(kinds)


def _default_of(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    return (
        ""
        if value is None
        else f"`{value!r}`".replace("'", '"').replace("False", "false").replace("True", "true")
    )


def _rules_of(prop: dict[str, Any]) -> str:
    rules: list[str] = []
    for v in _variants(prop):
        if "enum" in v:
            rules.append("one of " + ", ".join(f"`{e}`" for e in v["enum"]))
        if "const" in v:
            rules.append(f"`{v['const']}`")
        if "minimum" in v or "maximum" in v:
            rules.append(f"{v.get('minimum', '')}-{v.get('maximum', '')}")
        if "maxLength" in v:
            rules.append(f"at most {v['maxLength']} characters")
        if "minItems" in v or "maxItems" in v:
            rules.append(f"{v.get('minItems', 0)}-{v.get('maxItems', '')} items")
    if prop.get("description"):
        rules.append(prop["description"])
    return "; ".join(rules)
