"""The controller's handle on a running ``loopml serve``: its admin API and ``/metrics``."""

from __future__ import annotations

from typing import Any

from loopml.errors import ServeError


class ServerRefused(ServeError):
    """The server answered with an error status (``status``); 422 on a traffic change means it
    refused to deploy the challenger (it failed its check there)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServerClient:
    """Talks to one server over HTTP. Every call is idempotent, so a resumed controller can repeat it."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.request(method, self.url + path, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ServeError(f"server at {self.url} unreachable ({type(exc).__name__}); is 'loopml up' running?") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            raise ServerRefused(f"{method} {path} -> {r.status_code}: {msg}", r.status_code)
        return r.json() if r.content else None

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/admin/models")["models"]

    def describe(self, model: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/models/{model}")

    def reload(self, model: str) -> dict[str, Any]:
        return self._call("POST", f"/admin/models/{model}/reload")

    def set_policy(self, model: str, policy: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/admin/models/{model}/traffic", policy)

    def metrics_text(self) -> str:
        import httpx

        try:
            return httpx.get(self.url + "/metrics", timeout=self.timeout).text
        except httpx.HTTPError as exc:
            raise ServeError(f"server at {self.url} unreachable ({type(exc).__name__})") from None
