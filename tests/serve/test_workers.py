"""serve/workers.py and ``loopml serve --workers 2``: workers die with their master (the port is
free for a restart), and every admin change reaches every worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from loopml.loop.server_process import ServerProcess, port_free
from tests.serve.helpers import wait_for

TOKEN = "workers-admin-token"

# A master stand-in: spawns (as uvicorn does) a worker that calls die_with_parent, writes the
# worker's pid, and waits to be killed.
MASTER = """
import multiprocessing, signal, sys, time

def worker(use_prctl, ignore_term):
    from loopml.serve.workers import die_with_parent
    if ignore_term:  # a worker whose graceful shutdown hangs
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(use_prctl=use_prctl, grace_s=0.5, poll_s=0.05)
    time.sleep(120)

if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=worker, args=(sys.argv[1] == "1", sys.argv[2] == "1"))
    p.start()
    print(p.pid, flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("use_prctl,ignore_term", [(True, False), (False, False), (True, True)],
                         ids=["pdeathsig", "watchdog", "hung-shutdown"])
def test_worker_dies_with_its_master(tmp_path, use_prctl, ignore_term):
    script = tmp_path / "master.py"
    script.write_text(MASTER)
    master = subprocess.Popen([sys.executable, str(script), "1" if use_prctl else "0", "1" if ignore_term else "0"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    worker = int(master.stdout.readline())
    try:
        assert wait_for(lambda: _alive(worker), timeout=10)
        os.kill(master.pid, signal.SIGKILL)
        master.wait()
        assert wait_for(lambda: not _alive(worker), timeout=20)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.fixture
def two_workers(registered_model):
    ws, name = registered_model
    server = ServerProcess(ws, [f"{name}@champion"], poll_interval=30.0, token=TOKEN,
                           extra_args=["--workers", "2"]).start(timeout=180)
    yield server, ws, name
    server.stop()


def test_sigkill_of_the_master_frees_the_port_for_a_new_server(two_workers):
    server, ws, name = two_workers
    workers = _children(server.pid)
    assert len(workers) >= 2
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait()
    assert wait_for(lambda: port_free(server.host, server.port), timeout=30)
    assert wait_for(lambda: not any(_alive(w) for w in workers), timeout=30)
    again = ServerProcess(ws, [f"{name}@champion"], port=server.port, poll_interval=30.0).start(timeout=180)
    try:
        assert httpx.get(f"{again.url}/v2/health/ready").status_code == 200
    finally:
        again.stop()


def _fresh(url: str, n: int = 60, **kw) -> list[httpx.Response]:
    """``n`` requests, each on a new connection, so the kernel spreads them over the workers."""
    return [httpx.get(url, **kw) for _ in range(n)]


def test_admin_changes_reach_every_worker(two_workers):
    server, ws, name = two_workers
    admin = {"authorization": f"Bearer {TOKEN}"}
    model_url = f"{server.url}/v2/models/{name}"
    assert {r.status_code for r in _fresh(model_url)} == {200}

    r = httpx.delete(f"{server.url}/admin/models/{name}", headers=admin, timeout=120)
    assert r.status_code == 200, r.text
    assert {r.status_code for r in _fresh(model_url)} == {404}

    r = httpx.post(f"{server.url}/admin/models/{name}/load", json={"ref": "champion"}, headers=admin, timeout=120)
    assert r.status_code == 200, r.text
    assert {r.status_code for r in _fresh(model_url)} == {200}

    policy = {"kind": "canary", "weight": 0.25, "challenger": "challenger"}
    r = httpx.put(f"{server.url}/admin/models/{name}/traffic", json=policy, headers=admin, timeout=120)
    assert r.status_code == 200, r.text
    seen = {(p.json()["kind"], p.json()["weight"]) for p in
            _fresh(f"{server.url}/admin/models/{name}/traffic", headers=admin)}
    assert seen == {("canary", 0.25)}
