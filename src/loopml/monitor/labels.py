"""Delayed ground truth: ingest labels, join them to logged predictions, score live.

Labels are stored append-only beside the prediction log, under
``<workspace>/labels/<model>/part-*.parquet`` with columns ``key, label, labeled_at``,
where ``key`` is the prediction's ``request_id`` or the value of an id input column.
The join keeps the prediction's own event time (``ts``), so metrics land in the window
in which the prediction was made, whenever its label arrived; the latest label for a
key wins.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopml.errors import MonitorError
from loopml.monitor.logread import log_files

CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION = ("mae", "rmse", "r2")


def labels_folder(workspace_home: str | Path, model: str) -> Path:
    return Path(workspace_home) / "labels" / model


def ingest_labels(folder: str | Path, labels: pd.DataFrame, *, id_column: str = "request_id",
                  label_column: str = "label") -> tuple[Path, int]:
    """Append ``labels`` (``id_column`` -> ``label_column``) as one Parquet part; returns ``(path, rows)``."""
    for col in (id_column, label_column):
        if col not in labels.columns:
            raise MonitorError(f"labels file has no column '{col}'; columns: {', '.join(map(str, labels.columns))}")
    part = pd.DataFrame({"key": labels[id_column].astype("string"), "label": labels[label_column],
                         "labeled_at": pd.Timestamp.now(tz="UTC")}).dropna(subset=["key", "label"])
    if part.empty:
        raise MonitorError("labels file has no rows with both an id and a label")
    if pd.api.types.is_bool_dtype(part["label"]):
        part["label"] = part["label"].astype(int)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{name}.tmp"
    part.to_parquet(tmp, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.rename(tmp, folder / name)
    return folder / name, len(part)


def check_join_key(predictions_root: str | Path, model: str, id_column: str = "request_id") -> None:
    """Fail before anything is ingested when the log cannot be joined on ``id_column``: the
    model has no log, or no input column ``id_column`` was logged with its predictions."""
    import duckdb

    preds = log_files(predictions_root, model)  # fresh parts and compacted hours
    if not preds:
        raise MonitorError(f"no predictions logged for model '{model}' (log: {Path(predictions_root) / model}); "
                           "labels are joined to logged predictions, so serve the model first")
    if id_column == "request_id":
        return
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)",
                                          [preds]).fetchall()]
    finally:
        con.close()
    if f"in.{id_column}" not in cols:
        inputs = ", ".join(c.removeprefix("in.") for c in cols if c.startswith("in.")) or "none"
        raise MonitorError(f"cannot join labels on '{id_column}': the prediction log of '{model}' has no input "
                           f"'{id_column}' (logged inputs: {inputs}); use --id-column request_id, or send "
                           f"'{id_column}' with each prediction request")


def read_labelled(predictions_root: str | Path, labels_root: str | Path, model: str, *,
                  id_column: str = "request_id", since: float | None = None,
                  until: float | None = None) -> pd.DataFrame:
    """Logged predictions that have a label, with a ``label`` column; DuckDB does the join."""
    import duckdb

    preds = log_files(predictions_root, model)  # fresh parts and compacted hours
    labs = sorted(str(p) for p in Path(labels_root).glob("part-*.parquet"))
    if not preds or not labs:
        return pd.DataFrame(columns=["request_id", "ts", "version", "variant", "label"])
    key = "p.request_id" if id_column == "request_id" else f'CAST(p."in.{id_column}" AS VARCHAR)'
    where = []
    params: list[Any] = [labs, preds]
    if since is not None:
        where.append("CAST(p.ts AS TIMESTAMPTZ) >= to_timestamp(?)")
        params.append(float(since))
    if until is not None:
        where.append("CAST(p.ts AS TIMESTAMPTZ) < to_timestamp(?)")
        params.append(float(until))
    sql = (
        "WITH l AS (SELECT key, arg_max(label, labeled_at) AS label "
        "           FROM read_parquet(?, union_by_name=true) GROUP BY key) "
        "SELECT p.*, l.label FROM read_parquet(?, union_by_name=true) p JOIN l ON l.key = " + key
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY p.ts"
    con = duckdb.connect()
    try:
        return con.execute(sql, params).df()
    except duckdb.BinderException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MonitorError(f"cannot join labels on '{id_column}': {first}") from None
    finally:
        con.close()


def task_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, task: str) -> dict[str, float]:
    """The task's metrics on one group; a metric undefined on the group (one class only) is left out."""
    from sklearn import metrics as skm

    out: dict[str, float] = {"count": float(len(y_true))}
    if len(y_true) == 0:
        return out
    if task == "regression":
        y_true, y_pred = y_true.astype(float), y_pred.astype(float)
        out["mae"] = float(skm.mean_absolute_error(y_true, y_pred))
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y_true, y_pred)))
        if len(y_true) > 1 and np.var(y_true) > 0:
            out["r2"] = float(skm.r2_score(y_true, y_pred))
        return out
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    out["precision"] = float(skm.precision_score(y_true, y_pred, zero_division=0))
    out["recall"] = float(skm.recall_score(y_true, y_pred, zero_division=0))
    out["f1"] = float(skm.f1_score(y_true, y_pred, zero_division=0))
    if proba is not None and len(np.unique(y_true)) == 2:
        p = np.clip(proba.astype(float), 1e-15, 1 - 1e-15)
        out["roc_auc"] = float(skm.roc_auc_score(y_true, p))
        out["log_loss"] = float(skm.log_loss(y_true, p, labels=[0, 1]))
    return out


def performance(labelled: pd.DataFrame, task: str, *, every: str | None = None,
                by: tuple[str, ...] = ("version", "variant")) -> list[dict[str, Any]]:
    """Metrics per time window (``every``: ``"1h"``...; None = the whole frame) and per ``by`` group.

    Returns one dict per group: ``window_start``, the ``by`` values, ``count`` and the metrics.
    """
    from loopml.monitor.windows import parse_duration

    if task not in ("classification", "regression"):
        raise MonitorError(f"unknown task '{task}'; expected classification or regression")
    if labelled.empty:
        return []
    df = labelled.copy()
    keys = [c for c in by if c in df.columns]
    if every:
        size = parse_duration(every)
        # resolution-agnostic epoch seconds (pandas may hold ns or us)
        secs = ((pd.to_datetime(df["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()
        df["window_start"] = pd.to_datetime((np.floor(secs / size) * size), unit="s", utc=True)
        keys = ["window_start", *keys]
    rows = []
    groups = df.groupby(keys, dropna=False, sort=True) if keys else [((), df)]
    for vals, g in groups:
        vals = vals if isinstance(vals, tuple) else (vals,)
        proba = g["out.proba"].to_numpy() if "out.proba" in g.columns else None
        m = task_metrics(g["label"].to_numpy(), g["out.prediction"].to_numpy(), proba, task)
        rows.append({**{k: (str(v) if k == "window_start" else v) for k, v in zip(keys, vals)}, **m})
    return rows
