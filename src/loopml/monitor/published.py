"""Monitoring reports on object storage (``LOOPML_HOME=s3://...``, issue #11).

``loopml monitor report`` writes its HTML file where it is asked and, with a remote home, also
publishes the HTML and the drift/quality JSON as one publication under
``<home>/reports/<model>/<UTC time>/`` and again as ``<home>/reports/<model>/latest/`` (see
:class:`~loopml.platform.objstore.ObjectHome`: files first, then one manifest PUT, so a reader
gets a whole report or the previous one, never a mix).
"""

from __future__ import annotations

import time

from loopml.config import Workspace


def publish_report(ws: Workspace, model: str, files: dict[str, bytes], now: float | None = None) -> str | None:
    """Publish a report's files; returns where (the timestamped name), or None with a local home."""
    if not ws.reports_uri:
        return None
    from loopml.data import remote
    from loopml.errors import HomeStoreUnavailable

    home = remote.store(ws.reports_uri)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    with remote.reachable(home.url, HomeStoreUnavailable):
        home.publish(f"{model}/{stamp}", files)
        home.publish(f"{model}/latest", files)  # readers that want the newest need not list
    return f"{home.url}/{model}/{stamp}"
