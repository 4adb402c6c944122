"""Crash benchmark: SIGKILL the server `loopml up` runs, and the master of `loopml serve --workers 2`.

    python benchmarks/supervision_bench.py [--window 20] [--kills 3] [--scenarios kill,workers,hang]

Trains the example project's model in a temporary workspace, then, from one run:

1. anchor (before): a server started as `loopml up` started it before issue #9 (no
   supervisor): SIGKILL it and probe ``/v2/health/live`` on fresh connections every 20 ms for
   ``--window`` seconds: refused probes, and whether it came back;
2. ours: the same under `loopml up` (supervised): SIGKILL its server ``--kills`` times in a
   row; for each, the refused probes and the seconds until it answers again (restart backoff
   0.5, 1, 2 s ...), and the same window's refused probes;
3. anchor: plain ``uvicorn --workers 2`` (what `loopml serve --workers 2` ran before): SIGKILL
   the master; does the port come free within ``--window`` s?
4. ours: `loopml serve --workers 2`: SIGKILL the master; seconds until the port is free, and
   until a new server on that port is ready;
5. a hung server (SIGSTOP: alive, port held, answering nothing), watched by the supervisor
   ``loopml up`` runs: anchor = without the liveness probe (``probe_failures=0``, only a dead
   process was restarted before), ours = its defaults; failed probes and seconds until it
   answers again.

Every server binds 127.0.0.1; every process the script starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"


class Prober:
    """Probes a URL on a new connection every ``every_s``; counts refused / ok by time."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        self.url, self.every_s = url, every_s
        self.events: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok = httpx.get(self.url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.events.append((t, ok))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def failed_between(self, a: float, b: float) -> int:
        return sum(1 for t, ok in self.events if a <= t < b and not ok)

    def back_at(self, after: float) -> float | None:
        return next((t for t, ok in self.events if t > after and ok), None)


def setup(root: Path) -> tuple[Path, Path]:
    from loopml.config import Workspace
    from loopml.demo.project import scaffold_project
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec

    proj = scaffold_project(root / "proj", rows=3000)
    os.environ["LOOPML_HOME"] = str(root / "ws")
    ws = Workspace(root / "ws").init()
    run_pipeline(load_spec(proj), ws, project_dir=proj)
    return proj, root / "ws"


def record(home: Path) -> dict:
    try:
        return json.loads((home / "run" / "server.json").read_text())
    except (OSError, ValueError):
        return {}


def wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def unsupervised(home: Path, window: float) -> dict:
    from loopml.config import Workspace
    from loopml.loop.server_process import ServerProcess

    server = ServerProcess(Workspace(home), ["fraud@champion"]).start(timeout=180)
    with Prober(f"{server.url}/v2/health/live") as probe:
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait()
        time.sleep(window)
    back = probe.back_at(t0)
    server.stop()
    return {"refused": probe.failed_between(t0, t0 + window), "back_s": None if back is None else back - t0}


def supervised(proj: Path, home: Path, window: float, kills: int) -> list[dict]:
    env = {**os.environ, "LOOPML_HOME": str(home)}
    up = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "up", "-p", str(proj)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = []
    try:
        assert wait(lambda: record(home).get("state") == "ready", 240), "loopml up did not start its server"
        with Prober(record(home)["url"] + "/v2/health/live") as probe:
            time.sleep(0.5)
            for _ in range(kills):
                pid = record(home)["pid"]
                t0 = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                wait(lambda: record(home).get("pid") != pid and record(home).get("state") == "ready", 240)
                wait(lambda: probe.back_at(t0) is not None, 10)
                back = probe.back_at(t0)
                out.append({"refused": probe.failed_between(t0, back or time.monotonic()),
                            "back_s": None if back is None else back - t0})
            time.sleep(max(0.0, window - sum(o["back_s"] or 0 for o in out)))
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
    return out


PLAIN_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def kill_master(cmd: list[str], port: int, window: float, cwd: Path, env: dict) -> dict:
    from loopml.loop.server_process import port_free

    master = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait(lambda: _ready(port), 240), f"{cmd} did not start"
    workers = _children(master.pid)
    t0 = time.monotonic()
    os.kill(master.pid, signal.SIGKILL)
    master.wait()
    freed = wait(lambda: port_free("127.0.0.1", port), window)
    free_s = time.monotonic() - t0 if freed else None
    for w in workers:  # the anchor's orphans (and any of ours still draining): stopped by their pid
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"port_free_s": free_s, "workers": len(workers)}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code in (200, 404)
    except httpx.HTTPError:
        return False


def hung(home: Path, window: float, probe_failures: int | None) -> dict:
    """SIGSTOP a supervised server; ``probe_failures`` 0 = the supervisor without its liveness
    probe (the anchor), None = the supervisor's defaults."""
    from loopml.config import Workspace
    from loopml.loop.server_process import ServerProcess
    from loopml.loop.supervisor import Supervisor

    said: list[tuple[float, str]] = []
    server = ServerProcess(Workspace(home), ["fraud@champion"]).start(timeout=180)
    kw = {} if probe_failures is None else {"probe_failures": probe_failures}
    sup = Supervisor(server, "fraud", say=lambda m: said.append((time.monotonic(), m)), **kw).start()
    pid = server.pid
    try:
        with Prober(f"{server.url}/v2/health/live") as probe:
            time.sleep(0.5)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            if probe_failures == 0:
                time.sleep(window)
            else:
                wait(lambda: sup.restarts >= 1 and probe.back_at(t0) is not None, 240)
        back = probe.back_at(t0)
        killed = next((t for t, m in said if "killing it" in m), None)
        return {"failed": probe.failed_between(t0, back or t0 + window), "back_s": None if back is None else back - t0,
                "killed_s": None if killed is None else killed - t0, "probe": [sup.probe_every_s, sup.probe_timeout_s,
                                                                               sup.probe_failures]}
    finally:
        sup.stop()
        try:
            os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        except ProcessLookupError:
            pass
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=20.0, help="seconds observed after each kill (anchor)")
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs in a row of the supervised server")
    ap.add_argument("--scenarios", default="kill,workers,hang", help="which to run (comma-separated)")
    args = ap.parse_args()
    which = set(args.scenarios.split(","))
    from loopml.loop.server_process import ServerProcess, free_port

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("training the example model ...", flush=True)
        proj, home = setup(root)
        if "kill" in which:
            before = unsupervised(home, args.window)
            after = supervised(proj, home, args.window, args.kills)
        if "workers" in which:
            (root / "plain.py").write_text(PLAIN_APP)
            env = {**os.environ, "PYTHONPATH": str(SRC)}
            p1, p2 = free_port(), free_port()
            plain = kill_master([sys.executable, "-m", "uvicorn", "plain:app", "--workers", "2", "--port", str(p1)],
                                p1, args.window, root, env)
            ours = kill_master([sys.executable, "-m", "loopml.cli.main", "serve", "-m", "fraud@champion", "--workers",
                                "2", "--port", str(p2), "--home", str(home)], p2, args.window, root, env)
            t0 = time.monotonic()
            from loopml.config import Workspace

            again = (ServerProcess(Workspace(home), ["fraud@champion"], port=p2).start(timeout=180)
                     if ours["port_free_s"] else None)
            ready_s = time.monotonic() - t0 if again else None
            if again:
                again.stop()
        if "hang" in which:
            hang_before = hung(home, args.window, 0)
            hang_after = hung(home, args.window, None)

    if "kill" in which:
        report_kill(before, after, args.window)
    if "workers" in which:
        report_workers(plain, ours, ready_s, args.window)
    if "hang" in which:
        print("\nSIGSTOP of the server (alive, port held, no answers; probes every 20 ms, 1 s timeout)")
        print(f"  anchor, supervisor without liveness probe (before): {hang_before['failed']} failed probes in "
              f"{args.window:.0f} s; " + (f"back after {hang_before['back_s']:.1f} s" if hang_before["back_s"]
                                         else "never came back"))
        every, timeout, failures = hang_after["probe"]
        print(f"  ours, liveness probe every {every:g} s, {timeout:g} s timeout, {failures} failures in a row: "
              + (f"killed after {hang_after['killed_s']:.1f} s, " if hang_after["killed_s"] else "")
              + (f"answering again after {hang_after['back_s']:.1f} s" if hang_after["back_s"] else "not back")
              + f" ({hang_after['failed']} failed probes)")


def report_kill(before: dict, after: list[dict], window: float) -> None:
    args = argparse.Namespace(window=window)
    print("\nSIGKILL of the server loopml up runs (probes every 20 ms on fresh connections)")
    print(f"  anchor, unsupervised (before): {before['refused']} refused probes in {args.window:.0f} s; "
          + ("back after %.1f s" % before["back_s"] if before["back_s"] else "never came back"))
    for i, a in enumerate(after, 1):
        print(f"  ours, supervised, kill {i} in a row: {a['refused']} refused probes; answering again after "
              + (f"{a['back_s']:.1f} s" if a["back_s"] else "-- (not back)"))


def report_workers(plain: dict, ours: dict, ready_s: float | None, window: float) -> None:
    args = argparse.Namespace(window=window)
    print("\nSIGKILL of the master of --workers 2")
    print(f"  anchor, plain uvicorn --workers 2 (before): port "
          + (f"free after {plain['port_free_s']:.1f} s" if plain["port_free_s"] else f"still held after {args.window:.0f} s"))
    print(f"  ours, loopml serve --workers 2: port "
          + (f"free after {ours['port_free_s']:.1f} s" if ours["port_free_s"] else f"still held after {args.window:.0f} s")
          + (f"; a new server on it ready {ready_s:.1f} s later" if ready_s else ""))


if __name__ == "__main__":
    main()
