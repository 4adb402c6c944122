"""Reading the prediction log: a window touches only the files its names say overlap it.

``read_predictions(root, model, since=, until=, last=)`` is what the controller calls every
few seconds and ``loopml monitor`` calls per window. It lists the hour folders of the
window and the fresh parts (:func:`loopml.monitor.logfiles.snapshot`), then hands DuckDB
only those files. A file deleted between listing and reading (compaction, retention) makes
it list again. A root that carries ``remote_url`` (a workspace whose ``LOOPML_HOME`` is on
object storage) is read from every replica's published parts (:mod:`loopml.monitor.remotelog`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from loopml.monitor.logfiles import newest_first_cover, snapshot


def _ms(t: float | None, up: bool = False) -> int | None:
    if t is None:
        return None
    return int(math.ceil(t * 1000)) if up else int(math.floor(t * 1000))


def log_files(root: str | Path, model: str, *, since: float | None = None,
              until: float | None = None) -> list[str]:
    """Paths of the files holding a model's rows in ``[since, until)`` (all when unbounded),
    each row in exactly one of them, oldest first by name."""
    if getattr(root, "remote_url", None):  # LOOPML_HOME on object storage: every replica's parts
        from loopml.monitor.remotelog import remote_files

        return remote_files(root, model, since=since, until=until)
    folder = Path(root) / model
    files = snapshot(folder, _ms(since), _ms(until, up=True))
    return [str(folder / f.rel) for f in sorted(files, key=lambda f: (f.min_ms, f.rel))]


def _query(files: list[str], since, until, limit, last):
    import duckdb

    where, params = [], []
    if since is not None:
        where.append("CAST(ts AS TIMESTAMPTZ) >= to_timestamp(?)")  # ts may be TIMESTAMPTZ_NS
        params.append(float(since))
    if until is not None:
        where.append("CAST(ts AS TIMESTAMPTZ) < to_timestamp(?)")
        params.append(float(until))
    sql = "SELECT * FROM read_parquet(?, union_by_name=true)"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if last is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY ts DESC LIMIT {int(last)}) ORDER BY ts"
    else:
        sql += " ORDER BY ts"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
    con = duckdb.connect()
    try:
        return con.execute(sql, [files, *params]).df()
    finally:
        con.close()


def _gone(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "no such file" in text or "no files found" in text or "cannot open file" in text


def read_predictions(root: str | Path, model: str, *, since: float | None = None,
                     until: float | None = None, limit: int | None = None,
                     last: int | None = None, retries: int = 20):
    """Read the log of one model as a DataFrame, oldest first, via DuckDB.

    ``since``/``until`` are epoch seconds; ``last`` keeps the most recent N rows. Only the
    files whose names overlap the window are opened; with ``last`` alone, the newest files
    that hold N rows and any that overlap them.
    """
    import duckdb
    import pandas as pd

    from loopml.monitor.predlog import META_COLUMNS

    if getattr(root, "remote_url", None):  # LOOPML_HOME on object storage: every replica's parts
        from loopml.monitor.remotelog import read_remote

        return read_remote(root, model, since=since, until=until, limit=limit, last=last)
    folder = Path(root) / model
    for attempt in range(retries):
        files = snapshot(folder, _ms(since), _ms(until, up=True))
        bound = since
        if last is not None and files:
            cover = newest_first_cover(files, int(last))
            if cover is not None and (since is None or cover / 1000.0 > since):
                bound = cover / 1000.0
                files = [f for f in files if f.max_ms >= cover]
        if not files:
            return pd.DataFrame(columns=list(META_COLUMNS))
        paths = [str(folder / f.rel) for f in files]
        try:
            return _query(paths, bound, until, limit, last)  # the newest `last` all lie at or after bound
        except duckdb.Error as e:
            if not _gone(e) or attempt == retries - 1:
                raise
            time.sleep(0.002)  # compaction or retention removed a file after we listed it
    raise AssertionError("unreachable")
