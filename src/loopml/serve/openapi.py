"""An OpenAPI 3 description of the HTTP API (served at ``/openapi.json``).

It describes every route, its request body, the body of each answer (200s included) and the
admin API behind its bearer token, so a schema fuzzer (schemathesis, in the test suite) can
check the server against it: statuses, content types, response bodies, ``Allow`` on 405.
"""

from __future__ import annotations

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_OBJ = {"type": "object"}

_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                             "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
    "parameters": _OBJ,
    "data": {"type": "array"}}}
_OUT_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string"}, "data": {"type": "array"}}}

_INFER = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"}, "parameters": _OBJ,
    "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}}}}}
_INFER_OK = {"type": "object", "required": ["model_name", "model_version", "id", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "parameters": _OBJ, "outputs": {"type": "array", "items": _OUT_TENSOR}}}

_INVOCATIONS = {"type": "object", "properties": {
    "dataframe_split": {"type": "object", "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                                         "data": {"type": "array", "items": {"type": "array"}}}},
    "dataframe_records": {"type": "array", "items": _OBJ},
    "instances": {"type": "array"}, "inputs": {}, "params": _OBJ}}
_INVOCATIONS_OK = {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array"}}}

_METADATA_TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}}}
_MODEL_METADATA = {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"], "properties": {
    "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
    "platform": {"type": "string"}, "inputs": {"type": "array", "items": _METADATA_TENSOR},
    "outputs": {"type": "array", "items": _METADATA_TENSOR}, "parameters": _OBJ}}
_SERVER_METADATA = {"type": "object", "required": ["name", "version", "extensions"], "properties": {
    "name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array"}}}
_DEPLOYMENT = {"type": "object", "nullable": True}
_ENDPOINT = {"type": "object", "required": ["name", "ref", "ready", "policy"], "properties": {
    "name": {"type": "string"}, "ref": {"type": "string"}, "ready": {"type": "boolean"}, "policy": _OBJ,
    "primary": _DEPLOYMENT, "challenger": _DEPLOYMENT, "last_error": {"type": "string", "nullable": True}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    return {str(s): _json(_ERROR, "error") for s in statuses}


def _get(summary: str, ok: dict, *errors: int, params: list | None = None) -> dict:
    op = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if params:
        op["parameters"] = params
    return op


def _post(summary: str, schema: dict, ok: dict, params: list | None = None, required: bool = True) -> dict:
    op = {"summary": summary,
          "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}},
          "responses": {"200": ok, **_errors(400, 401, 404, 408, 413, 415, 422, 503, 504)}}
    if params:
        op["parameters"] = params
    return op


def _admin(op: dict) -> dict:
    """An admin operation: bearer token, 401 without it, 404 when the admin API is off."""
    op = {**op, "security": [{"bearer": []}]}
    op["responses"] = {**op["responses"], **_errors(400, 401, 404, 409, 422, 503)}
    return op


def document(models: list[str]) -> dict:
    name = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "enum": models or ["model"]}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    admin_name = {**name, "name": "name"}
    text = {"description": "ok", "content": _TEXT}
    ready = _json({"type": "object", "properties": {"ready": {"type": "boolean"}}, "required": ["ready"]}, "ready")
    model_ready = _json({"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                         "required": ["name", "ready"]}, "model readiness")
    endpoint = _json(_ENDPOINT, "the endpoint")
    paths = {
        "/v2": {"get": _get("server metadata", _json(_SERVER_METADATA, "server metadata"))},
        "/v2/health/live": {"get": _get("liveness", _json({"type": "object", "properties": {
            "live": {"type": "boolean"}}, "required": ["live"]}, "live"))},
        "/v2/health/ready": {"get": _get("readiness", ready, 503)},
        "/v2/models/{model}": {"get": _get("model metadata", _json(_MODEL_METADATA, "model metadata"), 404, 503,
                                           params=[name])},
        "/v2/models/{model}/ready": {"get": {**_get("model readiness", model_ready, 404, params=[name]),
                                             "responses": {"200": model_ready, "503": model_ready,
                                                           **_errors(404)}}},
        "/v2/models/{model}/versions/{version}": {"get": _get("version metadata", _json(_MODEL_METADATA, "metadata"),
                                                              404, params=[name, version])},
        "/v2/models/{model}/infer": {"post": _post("OIP v2 inference", _INFER, _json(_INFER_OK, "predictions"),
                                                   [name])},
        "/v2/models/{model}/versions/{version}/infer": {"post": _post(
            "OIP v2 inference on a version", _INFER, _json(_INFER_OK, "predictions"), [name, version])},
        "/invocations": {"post": _post("MLflow scoring protocol", _INVOCATIONS,
                                       _json(_INVOCATIONS_OK, "predictions"))},
        "/ping": {"get": _get("MLflow health", text, 503)},
        "/health": {"get": _get("MLflow health", text, 503)},
        "/version": {"get": _get("MLflow version", text)},
        "/metrics": {"get": _get("Prometheus metrics", text)},
        "/openapi.json": {"get": _get("this document", _json(_OBJ, "OpenAPI 3"))},
        "/admin/models": {"get": _admin(_get("every endpoint", _json({"type": "object", "properties": {
            "models": {"type": "array", "items": _ENDPOINT}}, "required": ["models"]}, "endpoints")))},
        "/admin/reload": {"post": _admin({"summary": "re-resolve every alias now", "responses": {
            "200": _json({"type": "object", "properties": {"models": {}}, "required": ["models"]}, "reloaded")}})},
        "/admin/models/{name}": {
            "get": _admin(_get("one endpoint", endpoint, params=[admin_name])),
            "delete": _admin({"summary": "stop serving it", "parameters": [admin_name], "responses": {
                "200": _json({"type": "object", "properties": {"unloaded": {"type": "string"}}}, "unloaded")}})},
        "/admin/models/{name}/reload": {"post": _admin({"summary": "re-resolve its alias now",
                                                        "parameters": [admin_name], "responses": {"200": endpoint}})},
        "/admin/models/{name}/load": {"post": _admin({
            "summary": "serve a model", "parameters": [admin_name],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ref": {"type": "string", "minLength": 1}}}}}},
            "responses": {"200": endpoint}})},
        "/admin/models/{name}/unload": {"post": _admin({"summary": "stop serving it", "parameters": [admin_name],
                                                        "responses": {"200": _json(_OBJ, "unloaded")}})},
        "/admin/models/{name}/traffic": {
            "get": _admin(_get("its traffic policy", _json(_OBJ, "policy"), params=[admin_name])),
            "put": _admin({"summary": "set its traffic policy", "parameters": [admin_name],
                           "requestBody": {"required": True, "content": {"application/json": {"schema": {
                               "type": "object", "properties": {
                                   "kind": {"type": "string", "enum": ["single", "canary", "ab", "shadow"]},
                                   "weight": {"type": "number", "minimum": 0, "maximum": 1},
                                   "key": {"type": "string"}, "challenger": {"type": "string"}}}}}},
                           "responses": {"200": endpoint}})},
    }
    return {"openapi": "3.0.3", "info": {"title": "loopml serve", "version": "1"}, "paths": paths,
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
