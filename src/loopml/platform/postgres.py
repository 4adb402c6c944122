"""A private PostgreSQL cluster in a folder: ``initdb`` + ``pg_ctl`` on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root, so when we are root every server-side program runs as the
``postgres`` user (``runuser``) in a folder owned by it. The superuser is ``loopml`` with a
generated password (scram-sha-256 for every connection, TCP and the unix socket): the password
lives in a 0600 file and in a libpq password file (``PGPASSFILE``), never in argv.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from loopml.errors import PlatformComponentFailed, PlatformToolMissing
from loopml.platform.base import free_port, log_tail, new_secret, wait_until, write_private

USER = "loopml"
OS_USER = "postgres"  # the account Debian's package creates; used only when we are root
# A unix socket path is limited to 107 bytes; beyond this the cluster listens on TCP only.
MAX_SOCKET_DIR = 80


def pg_bindir() -> Path:
    """Folder of ``initdb``/``pg_ctl``: ``$LOOPML_PG_BIN``, PATH, or Debian's newest version."""
    env = os.environ.get("LOOPML_PG_BIN")
    if env:
        return Path(env)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # Debian links pg_ctl alone into PATH
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise PlatformToolMissing("pg_ctl", "Debian: apt-get install postgresql")


class PostgresServer:
    """One PostgreSQL cluster under ``root``. The constructor only stores values."""

    component = "postgres"

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.pid: int | None = None

    # --- paths -------------------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def pgpass_file(self) -> Path:
        """libpq password file: export ``PGPASSFILE`` to it and URLs need no password."""
        return self.root / "pgpass"

    @property
    def cluster(self) -> Path:
        """The folder the server process owns (data, socket, log); see :meth:`_cluster_dir`."""
        link = self.root / "cluster"
        return link.resolve() if link.is_symlink() else link

    @property
    def log(self) -> Path:
        return self.cluster / "server.log"

    # --- URLs --------------------------------------------------------------------------

    def url(self, dbname: str = "loopml", *, with_password: bool = True) -> str:
        """``postgresql://`` URL of ``dbname``; without the password it relies on ``PGPASSFILE``."""
        secret = f":{self.password()}" if with_password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    # --- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        """Initialise the cluster on first use, start it, wait until it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        password = new_secret(self.password_file)
        cluster = self._cluster_dir()
        if not (cluster / "data" / "PG_VERSION").exists():
            self._initdb(cluster, password)
        if self.port is None:
            self.port = free_port()
        write_private(self.pgpass_file, f"127.0.0.1:{self.port}:*:{USER}:{password}\n")
        sock = cluster / "run"
        sockets = str(sock) if len(str(sock)) <= MAX_SOCKET_DIR else ""
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k '{sockets}'"
        out = self._run(["pg_ctl", "-D", str(cluster / "data"), "-l", str(cluster / "server.log"),
                         "-o", opts, "-w", "-t", str(int(timeout)), "start"], check=False)
        try:
            if out.returncode != 0:
                raise PlatformComponentFailed(self.component, "did not start",
                                              (out.stdout or "") + (out.stderr or "") + log_tail(self.log))
            wait_until(self.component, self.healthy, pid=None, log=self.log, timeout=timeout)
        except BaseException:
            self.stop()  # pg_ctl may have left a postmaster behind on a timeout
            raise
        self.pid = self.read_pid()
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: disconnect clients, checkpoint, exit. Idempotent."""
        data = self.cluster / "data"
        if not (data / "postmaster.pid").exists():
            return
        self._run(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], check=False)

    def remove(self) -> None:
        """Stop and delete the cluster's files (the tests' clean-up)."""
        self.stop()
        cluster = self.cluster
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def read_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid`` (first line), or None when not running."""
        try:
            return int((self.cluster / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def healthy(self) -> bool:
        """Whether the server accepts connections (``pg_isready`` over TCP; needs no password)."""
        if self.port is None:
            return False
        out = subprocess.run([str(pg_bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True, timeout=10)
        return out.returncode == 0

    def create_database(self, name: str) -> str:
        """Create database ``name`` (no-op when it exists); returns its URL with the password."""
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{_ident(name)}"')
        finally:
            conn.close()
        return self.url(name)

    # --- internals ---------------------------------------------------------------------

    def _cluster_dir(self) -> Path:
        """``root/cluster`` when the server's account can reach it; else (root running in a folder
        the ``postgres`` user cannot traverse, such as a 0700 temp folder) a private folder
        under the system temp dir, linked from ``root/cluster``."""
        link = self.root / "cluster"
        if link.is_symlink():
            return link.resolve()
        if link.is_dir():
            return link
        if not _as_root() or _reachable_by_postgres(self.root):
            link.mkdir(mode=0o700)
            _chown_to_postgres(link)
            return link
        target = Path(tempfile.mkdtemp(prefix="loopml-pg-"))
        _chown_to_postgres(target)
        link.symlink_to(target)
        return target

    def _initdb(self, cluster: Path, password: str) -> None:
        pwfile = cluster / ".pw"
        write_private(pwfile, password + "\n")
        _chown_to_postgres(pwfile)
        try:
            self._run(["initdb", "-D", str(cluster / "data"), "-U", USER, "--pwfile", str(pwfile),
                       "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-instructions"])
        finally:
            pwfile.unlink(missing_ok=True)
        (cluster / "run").mkdir(mode=0o700, exist_ok=True)
        _chown_to_postgres(cluster / "run")

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program, as the ``postgres`` user when we are root."""
        cmd = [str(pg_bindir() / argv[0]), *argv[1:]]
        if _as_root():
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.cluster if self.cluster.is_dir() else None)
        if check and out.returncode != 0:
            raise PlatformComponentFailed(self.component, f"'{argv[0]}' failed", out.stdout + out.stderr)
        return out


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and '_'")
    return name


def _as_root() -> bool:
    return os.geteuid() == 0


def _chown_to_postgres(path: Path) -> None:
    if _as_root():
        shutil.chown(path, OS_USER, OS_USER)


def _reachable_by_postgres(folder: Path) -> bool:
    """Whether the ``postgres`` account may traverse ``folder`` (and so every folder above it)."""
    out = subprocess.run(["runuser", "-u", OS_USER, "--", "test", "-x", str(folder)],
                         capture_output=True, timeout=10)
    return out.returncode == 0
