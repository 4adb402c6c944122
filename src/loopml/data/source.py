"""Read a table (CSV or Parquet) from a local path or any fsspec URL.

:func:`read_table` is the one door data comes in through. The format follows the
name: ``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``, or a folder of Parquet files.
Every problem a user can cause (missing file, empty file, malformed CSV, unknown
extension, missing fsspec back end) becomes a :class:`DataSourceError` naming the
source and saying what to do; no traceback reaches the user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from loopml.errors import DataSourceError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_KNOWN = "use .csv, .csv.gz, .parquet or .pq, or a folder of Parquet files"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str) -> bool:
    """True for ``scheme://...`` sources (read through fsspec), false for local paths."""
    return bool(_URL.match(source))


def resolve_source(source: str, base_dir: Path | None = None) -> str:
    """A local path made absolute against ``base_dir`` (the project folder); URLs unchanged."""
    if is_url(source):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return str(path.resolve())


def table_format(name: str) -> str | None:
    """``"csv"``, ``"parquet"`` or None, from a file name's extension."""
    lower = name.lower().rstrip("/")
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def read_table(source: str, *, base_dir: Path | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table into a DataFrame.

    ``source`` is a local path (relative paths are taken from ``base_dir`` when
    given, else the working directory) or an fsspec URL such as ``file://``,
    ``memory://`` or ``s3://`` (the latter needs ``s3fs`` installed).
    Raises :class:`DataSourceError` for anything that cannot be read.
    """
    location = resolve_source(source, base_dir)
    fs, path = _filesystem(source, location)
    try:
        exists = fs.exists(path)
        is_dir = exists and fs.isdir(path)
    except Exception as exc:  # remote back ends raise their own types (auth, network)
        raise DataSourceError(source, f"cannot reach ({_reason(exc)}); check the URL and credentials") from None
    if not exists:
        where = "" if is_url(source) else f" (looked for {location})"
        raise DataSourceError(source, f"file not found{where}; check data.source in loopml.yaml or the path you passed")
    if is_dir:
        return _read_parquet_folder(source, fs, path)
    fmt = table_format(path)
    if fmt is None:
        suffix = "".join(Path(path).suffixes) or "no extension"
        raise DataSourceError(source, f"unknown file type ({suffix}); {_KNOWN}")
    try:
        if fs.size(path) == 0:
            raise DataSourceError(source, "file is empty; expected a header row and data")
    except DataSourceError:
        raise
    except Exception:  # size is optional for some back ends; reading will tell
        pass
    if fmt == "csv":
        return _read_csv(source, fs, path)
    return _read_parquet(source, fs, path)


def _filesystem(source: str, location: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(location)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise DataSourceError(source, f"reading this URL needs an extra package ({missing}); pip install it (s3fs for s3://, gcsfs for gs://)") from None
    except (ValueError, KeyError) as exc:
        raise DataSourceError(source, f"unsupported URL ({_reason(exc)}); use a local path or an fsspec URL such as s3://bucket/file.parquet") from None


def _read_csv(source: str, fs: Any, path: str) -> pd.DataFrame:
    compression = "gzip" if path.lower().endswith(".gz") else None
    try:
        with fs.open(path, "rb") as fh:
            return pd.read_csv(fh, compression=compression)
    except pd.errors.EmptyDataError:
        raise DataSourceError(source, "file is empty; expected a header row and data") from None
    except pd.errors.ParserError as exc:
        raise DataSourceError(source, _parser_reason(str(exc))) from None
    except UnicodeDecodeError as exc:
        raise DataSourceError(source, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV") from None
    except (OSError, EOFError) as exc:
        raise DataSourceError(source, f"cannot read ({_reason(exc)}); check the file is a valid{' gzip' if compression else ''} CSV and readable") from None


def _parser_reason(message: str) -> str:
    line = re.search(r"line (\d+)", message)
    fields = re.search(r"Expected (\d+) fields in line \d+, saw (\d+)", message)
    where = f" at line {line.group(1)}" if line else ""
    what = f": expected {fields.group(1)} fields, saw {fields.group(2)}" if fields else f" ({message.strip()})"
    return f"malformed CSV{where}{what}; fix that row or quote fields that contain commas"


def _read_parquet(source: str, fs: Any, path: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as fh:
            return pq.read_table(fh).to_pandas()
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt files
        raise DataSourceError(source, f"not a readable Parquet file ({_reason(exc)}); re-export it or use CSV") from None


def _read_parquet_folder(source: str, fs: Any, path: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        files = sorted(f for f in fs.find(path) if table_format(f) == "parquet")
    except Exception as exc:
        raise DataSourceError(source, f"cannot list folder ({_reason(exc)})") from None
    if not files:
        raise DataSourceError(source, f"folder holds no .parquet or .pq files; {_KNOWN}")
    tables = []
    for f in files:
        try:
            with fs.open(f, "rb") as fh:
                tables.append(pq.read_table(fh))
        except Exception as exc:
            raise DataSourceError(source, f"{Path(f).name}: not a readable Parquet file ({_reason(exc)})") from None
    import pyarrow as pa

    try:
        return pa.concat_tables(tables, promote_options="default").to_pandas()
    except Exception as exc:
        raise DataSourceError(source, f"the Parquet files in this folder have different schemas ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:200]
