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
            raise ServerRefused(f"{method} {self.url}{path} -> {r.status_code}: {msg}", r.status_code)
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


def resolve_all(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a headless Service's name: one per ready pod), sorted."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServeError(f"servers at {host}: the name does not resolve ({exc.strerror}); is the Service there?") from None
    return sorted({info[4][0] for info in infos})


class FleetClient:
    """Every server behind one URL, for a controller that runs apart from its servers
    (``loopml up --no-server``; on Kubernetes the server pods' headless Service, whose name
    resolves to one address per ready pod). The name is resolved again on every call, so pods
    that come and go are followed. Changes (traffic, reload) go to every server and fail when
    one refuses or cannot be reached (naming it): the controller then stops the step, it never
    assumes a pod it could not reach took the change. ``/metrics`` of every server are read and
    their counters summed, so the rollout's evidence covers all replicas, not whichever one a
    load-balanced Service happened to pick."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0, resolve: Any = None) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url.rstrip("/"))
        self.url = url.rstrip("/")
        self.scheme, self.host = parts.scheme, parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.token = token
        self.timeout = timeout
        self._resolve = resolve or resolve_all

    def servers(self) -> list[ServerClient]:
        addresses = self._resolve(self.host, self.port)
        if not addresses:
            raise ServeError(f"servers at {self.url}: {self.host} resolves to no address; are the server pods ready?")
        return [ServerClient(f"{self.scheme}://{f'[{a}]' if ':' in a else a}:{self.port}", self.token, self.timeout)
                for a in addresses]

    def healthy(self) -> bool:
        try:
            servers = self.servers()
        except ServeError:
            return False
        return all(s.healthy() for s in servers)

    def models(self) -> list[dict[str, Any]]:
        return self.servers()[0].models()

    def describe(self, model: str) -> dict[str, Any]:
        """The first server's view, with ``servers``: how many answered behind the name."""
        servers = self.servers()
        return {**servers[0].describe(model), "servers": len(servers)}

    def _every(self, call: Any) -> Any:
        answers = [call(s) for s in self.servers()]  # the first refusal raises, naming its server
        return answers[0]

    def reload(self, model: str) -> dict[str, Any]:
        return self._every(lambda s: s.reload(model))

    def set_policy(self, model: str, policy: dict[str, Any]) -> dict[str, Any]:
        return self._every(lambda s: s.set_policy(model, policy))

    def metrics_text(self) -> str:
        # one exposition per server, back to back: the parser merges the families and
        # signals.scrape sums samples of the same series, i.e. across servers
        return "\n".join(s.metrics_text() for s in self.servers())
