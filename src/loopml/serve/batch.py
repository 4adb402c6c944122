"""Batch prediction: one registered version over a CSV or Parquet file (a path or an fsspec
URL), in chunks, into a Parquet file.

Memory is bounded by ``chunk_rows``: the input is streamed (Parquet record batches, CSV
chunks), each chunk is predicted by the same :class:`~loopml.serve.runtime.ModelRuntime` the
server uses (so the same load-time checks, pickle refusal and fast path apply) and written as
one row group of the output. A local output is written under a temporary name and renamed
when complete, so no reader ever sees a partial file; an object-store output is published
by the store when the upload completes.

The output holds ``request_id`` (``<batch id>-<row number>``, 1-based, unique per run), the
input's id column when one is named, ``prediction``, ``proba_<class>`` for classifiers,
``model`` and ``version``, and with ``keep_inputs`` the model's input columns too. With a
``log_root`` every chunk also goes into the prediction log (variant ``batch``) under the
same request ids, so monitoring and delayed labels work on batch traffic as on live traffic.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from loopml.errors import DataSourceError, InvalidInput

Progress = Callable[[int, float | None], None]  # (rows done, fraction of the input read or None)

DEFAULT_CHUNK_ROWS = 50_000


@dataclass
class BatchResult:
    model: str
    version: str
    output: str
    rows: int
    chunks: int
    seconds: float
    logged: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _kind(source: str) -> str:
    name = source.lower().split("?", 1)[0]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise DataSourceError(source, "unknown file type; give a .csv or .parquet file")


def _open(source: str):
    import fsspec

    try:
        return fsspec.open(source, "rb", compression="infer").open()
    except FileNotFoundError:
        raise DataSourceError(source, "file not found") from None
    except (OSError, ValueError, ImportError) as e:
        raise DataSourceError(source, f"cannot open ({e})") from None


def iter_chunks(source: str, chunk_rows: int) -> Iterator[tuple[Any, float | None]]:
    """DataFrames of at most ``chunk_rows`` rows, each with the fraction of the input read so
    far (None when the size is unknown)."""
    import pandas as pd

    kind = _kind(source)
    f = _open(source)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
                raise DataSourceError(source, f"not a readable Parquet file ({e})") from None
            total = pf.metadata.num_rows or 0
            done = 0
            for batch in pf.iter_batches(batch_size=chunk_rows):
                done += batch.num_rows
                yield batch.to_pandas(), (done / total if total else None)
            return
        size = getattr(f, "size", None)
        try:
            size = size() if callable(size) else size
        except Exception:  # noqa: BLE001
            size = None
        try:
            reader = pd.read_csv(f, chunksize=chunk_rows)
            for chunk in reader:
                pos = f.tell() if size else None
                yield chunk, (min(1.0, pos / size) if pos is not None else None)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise DataSourceError(source, f"not a readable CSV file ({' '.join(str(e).split())[:200]})") from None
    finally:
        f.close()


class _Output:
    """A Parquet file written row group by row group, published whole or not at all."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.local = "://" not in target or target.startswith("file://")
        self._writer = None
        self._file = None
        self._tmp: str | None = None

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            if self.local:
                path = Path(self.target.removeprefix("file://"))
                path.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"))
                self._writer = pq.ParquetWriter(self._tmp, table.schema)
            else:
                import fsspec

                self._file = fsspec.open(self.target, "wb").open()
                self._writer = pq.ParquetWriter(self._file, table.schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.target.removeprefix("file://"))

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            if self._tmp is not None and os.path.exists(self._tmp):
                os.unlink(self._tmp)


def _output_table(runtime, pred, ids: list[str], chunk, id_column: str | None, keep_inputs: bool):
    import pyarrow as pa

    cols: dict[str, Any] = {"request_id": pa.array(ids, pa.string())}
    if id_column:
        cols[id_column] = pa.array(chunk[id_column].to_numpy())
    if keep_inputs:
        for c in _data_columns(runtime, chunk, id_column):
            cols[c] = pa.array(chunk[c].to_numpy())
    values = np.asarray(pred.predict)
    # a vector per row (embeddings, a network's outputs) is one list value per row
    cols["prediction"] = pa.array(list(values) if values.ndim > 1 else values)
    if pred.proba is not None and runtime.classes is not None:
        proba = np.asarray(pred.proba, dtype=np.float64)
        for j, cls in enumerate(runtime.classes):
            cols[f"proba_{cls}"] = pa.array(proba[:, j])
    n = len(ids)
    cols["model"] = pa.array([runtime.name] * n, pa.string())
    cols["version"] = pa.array([runtime.version] * n, pa.string())
    return pa.table(cols)


def predict_file(registry: Any, ref: Any, source: str, output: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 id_column: str | None = None, keep_inputs: bool = False, log_root: str | Path | None = None,
                 on_progress: Progress | None = None) -> BatchResult:
    """Predict every row of ``source`` with version ``ref`` into the Parquet file ``output``."""
    from loopml.serve.runtime import ModelRuntime, Rows

    if chunk_rows < 1:
        raise InvalidInput(f"--chunk-rows must be >= 1, got {chunk_rows}")
    _kind(source)
    t0 = time.perf_counter()
    runtime = ModelRuntime(registry, ref, predict_in_thread=False).load()
    recorder = None
    if log_root is not None:
        from loopml.serve.recorder import PredictionRecorder

        recorder = PredictionRecorder(log_root, runtime.name).start()
    out = _Output(output)
    batch_id = uuid.uuid4().hex[:12]
    done = chunks = 0
    try:
        for chunk, fraction in iter_chunks(source, chunk_rows):
            if chunks == 0:
                _check_columns(source, runtime, chunk, id_column)
            n = len(chunk)
            ids = [f"{batch_id}-{done + i + 1}" for i in range(n)]
            rows = rows_of(source, runtime, chunk, ids, id_column)
            try:
                pred = runtime.predict_sync(rows)
            except InvalidInput as e:
                raise InvalidInput(f"{source}: rows {done + 1}-{done + n}: {e}") from None
            out.write(_output_table(runtime, pred, ids, chunk, id_column, keep_inputs))
            if recorder is not None:
                recorder.record(rows, pred, runtime.version, "batch", runtime.inputs)
                _wait_for_log(recorder, chunk_rows)
            done += n
            chunks += 1
            if on_progress is not None:
                on_progress(done, fraction)
        if chunks == 0:
            raise DataSourceError(source, "no rows to predict")
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        logged = 0
        if recorder is not None:
            recorder.close()
            logged = recorder.recorded
        runtime.close()
    return BatchResult(runtime.name, runtime.version, output, done, chunks, time.perf_counter() - t0, logged)


def _wait_for_log(recorder: Any, chunk_rows: int) -> None:
    """Back-pressure: the log writer never queues more than two chunks, so memory stays
    bounded and no row is dropped for lack of room (the server drops instead of waiting)."""
    writer = getattr(recorder, "writer", None)
    while writer is not None and writer.pending > 2 * chunk_rows:
        time.sleep(0.005)


def _data_columns(runtime: Any, chunk: Any, id_column: str | None) -> list[str]:
    """The file columns that are model input: the signature's columns, or for a tensor model
    (or one without a signature) every column but the id column, in file order."""
    if runtime.layout == "columns":
        return list(runtime.column_names)
    return [str(c) for c in chunk.columns if str(c) != id_column]


def rows_of(source: str, runtime: Any, chunk: Any, ids: list[str], id_column: str | None) -> Any:
    """One chunk of a tabular file as the model's input rows.

    - named columns: one entry per signature column, as the server gets them;
    - one tensor input ``[-1, k]``: the file's k data columns, in file order, as the matrix;
      ``[-1]`` (e.g. BYTES text): its one data column;
    - several tensors of shape ``[-1]``: one file column per tensor name;
    - no signature: one data column as it is, several as one matrix.
    """
    from loopml.serve.runtime import Rows

    n = len(chunk)
    if runtime.layout == "columns":
        return Rows({c: chunk[c].to_numpy() for c in runtime.column_names}, n, ids)
    data = _data_columns(runtime, chunk, id_column)
    where = f"{source}: model '{runtime.name}' version {runtime.version}"
    if runtime.layout == "tensors":
        specs = runtime.inputs
        if runtime.named_tensors:
            if any(len(t.shape) != 1 for t in specs) or any(t.name not in chunk.columns for t in specs):
                raise InvalidInput(f"{where} takes tensors {[t.describe() for t in specs]}; a file feeds only "
                                   f"one column per 1-d tensor, named as the tensor ({', '.join(t.name for t in specs)})")
            return Rows({t.name: chunk[t.name].to_numpy() for t in specs}, n, ids, layout="tensors")
        (spec,) = specs
        width = spec.shape[1] if len(spec.shape) == 2 else 1 if len(spec.shape) == 1 else None
        if width is None or (width != -1 and width != len(data)) or (len(spec.shape) == 1 and len(data) != 1):
            want = f"{width} data column(s)" if width not in (None, -1) else "a tabular input"
            raise InvalidInput(f"{where} takes input '{spec.name}' {spec.describe()}: it needs {want}; the file "
                               f"has {len(data)} ({', '.join(data[:20])}; --id-column leaves one out)")
        values = chunk[data[0]].to_numpy() if len(spec.shape) == 1 else chunk[data].to_numpy()
        return Rows({spec.name: values}, n, ids, layout="tensors")
    if len(data) == 1:
        return Rows({data[0]: chunk[data[0]].to_numpy()}, n, ids, layout="tensors")
    return Rows({"input-0": chunk[data].to_numpy()}, n, ids, layout="tensors")


def _check_columns(source: str, runtime: Any, chunk: Any, id_column: str | None) -> None:
    if id_column and id_column not in chunk.columns:
        raise InvalidInput(f"{source}: --id-column '{id_column}' is not a column of the file")
    if runtime.layout != "columns":
        return  # rows_of checks what a tensor model needs
    missing = [c for c in runtime.column_names if c not in chunk.columns]
    if missing:
        raise InvalidInput(f"{source}: model '{runtime.name}' version {runtime.version} needs column(s) "
                           f"{', '.join(missing)}, which the file lacks; it has {', '.join(map(str, chunk.columns[:20]))}")
