"""Check a table against the spec's data contract, and propose a contract from a table.

:func:`validate_frame` checks required columns, dtypes, nullability, numeric
ranges, allowed categories, row-count bounds and uniqueness, all vectorized, and
returns a :class:`ContractReport` listing every violation with its column, rule,
count of offending rows and up to five example rows (``row`` is the 0-based row
position; messages and :func:`format_example` say ``row + 1``, the data row a user counts,
which in a CSV with a header is file line ``row + 2``).

Two rules hold without being written in the contract (fail closed, #8):

- ``mixed_types``: a column whose values are numbers but for a few text values
  ("12.5" x 999 and "twelve" once) would silently become a categorical feature; it fails
  unless the contract gives the column a ``dtype`` (``string``/``category`` to accept it).
- the target must not be null (see :func:`contract_for`); the count covers every row.

dtype rules are pragmatic, because CSV readers lose type information:

- ``int``: integer columns, or float columns whose non-missing values are all
  whole numbers (an int column with gaps is read as float).
- ``float`` / ``number``: any numeric column except bool (ints widen losslessly).
- ``bool``: bool columns, 0/1 numbers, or the text true/false/0/1 (any case).
- ``string``: text columns (also categoricals of text).
- ``category``: categorical, text, bool or integer columns (not float, not dates).
- ``datetime``: datetime columns, or text that parses as dates.

A text column is reported against ``int``/``float``/``number``/``datetime`` by its
values that do not parse; if every value parses, the whole column is reported
("stored as text"), except for ``datetime`` where parseable text passes.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopml.data.profile import stray_text
from loopml.errors import ContractViolation
from loopml.spec import ColumnContract, ContractSpec, ProjectSpec

MAX_EXAMPLES = 5
_EXAMPLE_COLUMNS = 8  # the offending column first, then context, for wide tables
_BOOL_TEXT = ["true", "false", "0", "1", "0.0", "1.0"]


@dataclass
class Violation:
    """One failed rule: which column (None for table-level rules), how many rows, examples."""

    column: str | None
    rule: str
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ContractReport:
    passed: bool
    violations: list[Violation]
    row_count: int

    def summary(self) -> str:
        if self.passed:
            return f"contract passed ({self.row_count} rows)"
        parts = [f"{v.column or '<table>'}: {v.rule}" for v in self.violations[:5]]
        more = f", and {len(self.violations) - 5} more" if len(self.violations) > 5 else ""
        return f"contract failed with {len(self.violations)} violation(s) ({', '.join(parts)}{more})"

    def raise_for_failure(self) -> "ContractReport":
        """Raise :class:`ContractViolation` (exit code 1) when the contract failed."""
        if not self.passed:
            raise ContractViolation(self.summary())
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "row_count": self.row_count, "violations": [asdict(v) for v in self.violations]}

    def to_markdown(self) -> str:
        lines = [f"**{self.summary()}**"]
        if self.violations:
            lines += ["", "| column | rule | count | message | example rows |", "|---|---|---|---|---|"]
            for v in self.violations:
                ex = ", ".join(format_example(e, v.column) for e in v.examples)
                cells = [v.column or "", v.rule, str(v.count), v.message, ex]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)


def format_example(example: dict[str, Any], column: str | None) -> str:
    """``row 4: -5`` for a column rule, ``row 4`` otherwise (1-based: the data row a user counts)."""
    if column is not None and column in example:
        return f"row {example['row'] + 1}: {example[column]!r}"
    return f"row {example['row'] + 1}"


def validate_frame(df: pd.DataFrame, contract: ContractSpec) -> ContractReport:
    """Check ``df`` against ``contract``; the report lists every violation found."""
    n = int(len(df))
    found: list[Violation] = []
    if contract.min_rows is not None and n < contract.min_rows:
        found.append(Violation(None, "min_rows", n, f"{n} rows, fewer than the minimum of {contract.min_rows}"))
    if contract.max_rows is not None and n > contract.max_rows:
        found.append(Violation(None, "max_rows", n, f"{n} rows, more than the maximum of {contract.max_rows}"))
    missing: set[str] = set()
    for name, rules in contract.columns.items():
        if name not in df.columns:
            if rules.required:
                missing.add(name)
                found.append(Violation(name, "required", n, _missing_message(name, df)))
            continue
        found += _check_column(df, name, rules, target=name == contract_target(contract))
    for name in df.columns:
        rules = contract.columns.get(str(name))
        if rules is None or rules.dtype is None:  # a declared dtype is checked by its own rule
            found += _mixed_types(df, str(name))
    for name in contract.unique:
        if name not in df.columns:
            if name not in missing:
                found.append(Violation(name, "unique", n, _missing_message(name, df)))
            continue
        s = df[name]
        bad = (s.duplicated(keep=False) & s.notna()).to_numpy()
        if bad.any():
            values = int(s[bad].nunique())
            found.append(_violation(df, name, "unique", bad, f"{values} value(s) appear more than once, in {int(bad.sum())} rows"))
    return ContractReport(passed=not found, violations=found, row_count=n)


def contract_for(spec: ProjectSpec) -> ContractSpec:
    """The spec's contract plus what the rest of the spec implies: the target, the listed
    features and the id column must exist, the id column must be unique, and the target
    must not be null (no model learns from a missing label: found here, on every row,
    rather than at the train step on the training split)."""
    columns = dict(spec.contract.columns)
    for name in [spec.data.target, *(spec.data.features or []), spec.data.id_column]:
        if name and name not in columns:
            columns[name] = ColumnContract()
    columns[spec.data.target] = columns[spec.data.target].model_copy(update={"nullable": False})
    unique = list(spec.contract.unique)
    if spec.data.id_column and spec.data.id_column not in unique:
        unique.append(spec.data.id_column)
    contract = spec.contract.model_copy(update={"columns": columns, "unique": unique})
    contract._target = spec.data.target
    return contract


def contract_target(contract: ContractSpec) -> str | None:
    """The target column of a contract made by :func:`contract_for` (None otherwise)."""
    return getattr(contract, "_target", None)


def _mixed_types(df: pd.DataFrame, name: str) -> list[Violation]:
    bad = stray_text(df[name])
    if bad is None:
        return []
    first = int(np.flatnonzero(bad)[0])
    n_bad, n_num = int(bad.sum()), int(df[name].notna().sum() - bad.sum())
    return [_violation(df, name, "mixed_types", bad,
                       f"{n_num} number(s) and {n_bad} text value(s), such as {_plain(df[name].iloc[first])!r} in "
                       f"row {first + 1} (line {first + 2} of a CSV with a header): read as text, the column would "
                       f"become a categorical feature; fix or empty the value(s), or declare "
                       f"contract.columns.{name}.dtype: string (or category) if the column is text")]


def _check_column(df: pd.DataFrame, name: str, rules: ColumnContract, target: bool = False) -> list[Violation]:
    s = df[name]
    out: list[Violation] = []
    if rules.dtype is not None:
        bad, as_text = _dtype_offenders(s, rules.dtype)
        if bad.any():
            what = "the column holds numbers stored as text" if as_text else f"{int(bad.sum())} value(s) are not {rules.dtype}"
            out.append(_violation(df, name, "dtype", bad, f"expected {rules.dtype}, column is {s.dtype}: {what}"))
    if not rules.nullable:
        bad = s.isna().to_numpy()
        if bad.any():
            what = ("in the target column (of every row in the dataset); drop or fill those rows" if target
                    else "in a column that must not be null")
            out.append(_violation(df, name, "nullable", bad, f"{int(bad.sum())} missing value(s) of {len(s)} rows {what}"))
    if (rules.min is not None or rules.max is not None) and not pd.api.types.is_datetime64_any_dtype(s):
        num = _as_float(s)
        for rule, bound, bad in (("min", rules.min, num < (rules.min or 0)), ("max", rules.max, num > (rules.max or 0))):
            if bound is not None and bad.any():
                word = "below the minimum" if rule == "min" else "above the maximum"
                out.append(_violation(df, name, rule, bad, f"{int(bad.sum())} value(s) {word} of {bound:g}"))
    if rules.allowed is not None:
        allowed_text = [str(a) for a in rules.allowed]
        ok = s.isin(rules.allowed) | s.astype(str).isin(allowed_text)
        bad = (s.notna() & ~ok).to_numpy()
        if bad.any():
            others = s[bad].astype(str).value_counts().index[:3].tolist()
            out.append(_violation(df, name, "allowed", bad, f"{int(bad.sum())} value(s) outside {rules.allowed}, such as {others}"))
    return out


def _dtype_offenders(s: pd.Series, dtype: str) -> tuple[np.ndarray, bool]:
    """Mask of non-missing values that break the dtype rule, and whether the column was
    rejected as a whole for holding parseable text."""
    notna = s.notna().to_numpy()
    none = np.zeros(len(s), dtype=bool)
    is_bool = pd.api.types.is_bool_dtype(s)
    is_num = pd.api.types.is_numeric_dtype(s) and not is_bool
    is_dt = pd.api.types.is_datetime64_any_dtype(s)
    is_text = _is_text(s)
    if dtype in ("float", "number", "int"):
        if is_num:
            if dtype != "int" or pd.api.types.is_integer_dtype(s):
                return none, False
            v = _as_float(s)
            return notna & ~(np.isfinite(v) & (v == np.floor(v))), False
        if is_bool or is_dt or not is_text:
            return notna, False
        v = _as_float(s)
        bad = notna & np.isnan(v)
        if dtype == "int":
            bad |= notna & ~np.isnan(v) & ~(np.isfinite(v) & (v == np.floor(v)))
        return (bad, False) if bad.any() else (notna, True)
    if dtype == "bool":
        if is_bool:
            return none, False
        if is_num:
            return notna & ~s.isin([0, 1]).to_numpy(), False
        return notna & ~s.astype(str).str.strip().str.lower().isin(_BOOL_TEXT).to_numpy(), False
    if dtype == "string":
        if is_text:
            return (notna & _non_string(s)) if s.dtype == object else none, False
        return notna, False
    if dtype == "category":
        ok = is_text or is_bool or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_integer_dtype(s)
        return (none if ok else notna), False
    if dtype == "datetime":
        if is_dt:
            return none, False
        if not is_text:
            return notna, False
        return notna & _as_datetime(s).isna().to_numpy(), False
    raise ValueError(f"unknown dtype rule '{dtype}'")  # the spec's Literal makes this unreachable


def _is_text(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return pd.api.types.is_string_dtype(s.cat.categories)
    return pd.api.types.is_string_dtype(s.dtype) or s.dtype == object


def _non_string(s: pd.Series) -> np.ndarray:
    try:
        return s.str.len().isna().to_numpy()  # the .str accessor yields NaN for non-strings
    except AttributeError:
        return np.ones(len(s), dtype=bool)


def _as_float(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s):
        return np.full(len(s), np.nan)
    num = pd.to_numeric(s, errors="coerce") if not pd.api.types.is_numeric_dtype(s) else s
    return np.asarray(num.to_numpy(dtype="float64", na_value=np.nan), dtype="float64")


def _as_datetime(s: pd.Series) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(s, errors="coerce", format="ISO8601")
        if parsed[s.notna()].isna().any():
            parsed = parsed.fillna(pd.to_datetime(s, errors="coerce", format="mixed"))
    return parsed


def _missing_message(name: str, df: pd.DataFrame) -> str:
    known = [str(c) for c in df.columns]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"columns are: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}"
    return f"required column '{name}' is missing; {hint}"


def _violation(df: pd.DataFrame, column: str, rule: str, bad: np.ndarray, message: str) -> Violation:
    positions = np.flatnonzero(bad)
    context = [c for c in df.columns if c != column][: _EXAMPLE_COLUMNS - 1]
    rows = df.iloc[positions[:MAX_EXAMPLES]][[column, *context]]
    examples = [{"row": int(p), **{str(k): _plain(v) for k, v in rec.items()}} for p, rec in zip(positions, rows.to_dict("records"))]
    return Violation(column, rule, int(positions.size), message, examples)


def _plain(v: Any) -> Any:
    """JSON-safe Python value for an example cell."""
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def infer_contract(df: pd.DataFrame, *, id_column: str | None = None, max_categories: int = 20) -> ContractSpec:
    """Propose a contract from a table: each column's dtype and nullability, at least one
    row, and a unique ``id_column`` if given. Ranges and allowed values are left open so
    new data is not rejected for being new; tighten them by hand."""
    columns: dict[str, ColumnContract] = {}
    for name in df.columns:
        s = df[name]
        columns[str(name)] = ColumnContract(dtype=_infer_dtype(s, max_categories), nullable=bool(s.isna().any()))
    unique = [id_column] if id_column and id_column in df.columns else []
    return ContractSpec(columns=columns, min_rows=1, unique=unique)


def _infer_dtype(s: pd.Series, max_categories: int) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_numeric_dtype(s):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if isinstance(s.dtype, pd.CategoricalDtype):
        return "category"
    if s.dtype == object and not _dtype_offenders(s, "bool")[0].any() and s.notna().any():
        return "bool"  # True/False with gaps comes out of read_csv as object
    distinct = s.nunique(dropna=True)
    return "category" if distinct <= max_categories and distinct * 2 <= max(len(s), 1) else "string"
