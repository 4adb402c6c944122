"""The CRDs' CEL ``x-kubernetes-validations`` evaluated with cel-python, as the API server
would after defaulting: the expressions checked are the ones in the CRD, not a Python copy."""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import celpy


@lru_cache(maxsize=None)
def _program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule))


def defaulted(schema: dict, value: Any) -> Any:
    """``value`` with the schema's defaults filled in and numbers as floats (Kubernetes gives
    CEL a double for every ``type: number`` field)."""
    value = copy.deepcopy(value)
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = defaulted(sub, value[key])
    if isinstance(value, list) and "items" in schema:
        value = [defaulted(schema["items"], v) for v in value]
    return value


def rules(schema: dict, path: str = ""):
    """(path, rule, message) of every CEL rule in ``schema``."""
    for r in schema.get("x-kubernetes-validations", []):
        yield path or ".", r["rule"], r["message"]
    for key, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, f"{path}.{key}")
    if "items" in schema:
        yield from rules(schema["items"], f"{path}[]")


def failures(schema: dict, value: Any, path: str = "") -> list[str]:
    """``path: message`` of every rule the (defaulted) ``value`` breaks."""
    value = defaulted(schema, value) if not path else value
    out = []
    for r in schema.get("x-kubernetes-validations", []):
        result = _program(r["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celpy.celtypes.BoolType):
            raise AssertionError(f"{path or '.'}: rule {r['rule']!r} gave {result!r}, not a bool")
        if not result:
            out.append(f"{path or '.'}: {r['message']}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                out += failures(sub, value[key], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += failures(schema["items"], v, f"{path}[{i}]")
    return out
