"""An OpenAPI 3 description of the HTTP API (served at ``/openapi.json``, used for fuzzing)."""

from __future__ import annotations

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}

_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                             "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
    "parameters": {"type": "object"},
    "data": {"type": "array"}}}

_INFER = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": {"type": "object"},
    "inputs": {"type": "array", "items": _TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}}}}}

_INVOCATIONS = {"type": "object", "properties": {
    "dataframe_split": {"type": "object", "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                                         "data": {"type": "array", "items": {"type": "array"}}}},
    "dataframe_records": {"type": "array", "items": {"type": "object"}},
    "instances": {"type": "array"}, "inputs": {}, "params": {"type": "object"}}}


def _get(summary: str) -> dict:
    return {"get": {"summary": summary, "responses": {"200": {"description": "ok"}, "404": _ERROR}}}


def _post(summary: str, schema: dict, params: list | None = None) -> dict:
    op = {"summary": summary, "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
          "responses": {"200": {"description": "predictions"}, "400": _ERROR, "404": _ERROR, "413": _ERROR,
                        "415": _ERROR, "422": _ERROR, "503": _ERROR}}
    if params:
        op["parameters"] = params
    return {"post": op}


def document(models: list[str]) -> dict:
    name = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "enum": models or ["model"]}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v2": _get("server metadata"),
        "/v2/health/live": _get("liveness"),
        "/v2/health/ready": _get("readiness"),
        "/v2/models/{model}": {"get": {**_get("model metadata")["get"], "parameters": [name]}},
        "/v2/models/{model}/ready": {"get": {**_get("model readiness")["get"], "parameters": [name]}},
        "/v2/models/{model}/versions/{version}": {"get": {**_get("version metadata")["get"], "parameters": [name, version]}},
        "/v2/models/{model}/infer": _post("OIP v2 inference", _INFER, [name]),
        "/v2/models/{model}/versions/{version}/infer": _post("OIP v2 inference on a version", _INFER, [name, version]),
        "/invocations": _post("MLflow scoring protocol", _INVOCATIONS),
        "/ping": _get("MLflow health"),
        "/health": _get("MLflow health"),
        "/version": _get("MLflow version"),
        "/metrics": _get("Prometheus metrics"),
    }
    return {"openapi": "3.0.3", "info": {"title": "loopml serve", "version": "1"}, "paths": paths}
