"""The private PostgreSQL cluster behind ``pg_url``: real server, real connections."""

from __future__ import annotations

import os
import stat

import psycopg2
import pytest

from loopml.platform.postgres import PostgresServer


def test_pg_url_is_a_fresh_database_each_time(pg_url, pg_database):
    other = pg_database()
    assert pg_url.startswith("postgresql://loopml:") and "@127.0.0.1:" in pg_url
    assert pg_url.rsplit("/", 1)[1] != other.rsplit("/", 1)[1]
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x int)")
        cur.execute("INSERT INTO t VALUES (1)")
    with psycopg2.connect(other) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'")
        assert cur.fetchone()[0] == 0  # nothing leaks between databases


def test_server_listens_on_loopback_and_needs_the_password(_postgres_server):
    server = _postgres_server
    assert server.healthy()
    with psycopg2.connect(server.url("postgres")) as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == "127.0.0.1"
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(server.url("postgres", with_password=False).replace("loopml@", "loopml:wrong@"))
    # the secrets are private files, and libpq's password file makes a password-less URL work
    for path in (server.password_file, server.pgpass_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    env = os.environ.copy()
    os.environ["PGPASSFILE"] = str(server.pgpass_file)
    try:
        psycopg2.connect(server.url("postgres", with_password=False)).close()
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_stop_is_idempotent_and_start_reuses_the_cluster(tmp_path):
    server = PostgresServer(tmp_path / "pg").start()
    try:
        url = server.create_database("kept")
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (x int)")
            cur.execute("INSERT INTO t VALUES (42)")
        conn.close()
        pid = server.pid
        assert pid and os.path.exists(f"/proc/{pid}")
        server.stop()
        server.stop()
        assert not server.healthy() and server.read_pid() is None
        again = PostgresServer(tmp_path / "pg", port=server.port).start()
        assert again.pid != pid
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT x FROM t")
            assert cur.fetchone()[0] == 42  # the data survived the restart
        conn.close()
    finally:
        server.remove()
    assert not server.healthy()
