"""The project spec, ``loopml.yaml``, as Pydantic models.

Every problem is reported with its path inside the file, for example
``loopml.yaml: model.params.max_depth: expected integer, got 'ten'``.
Validation happens here, declaratively, and nowhere else.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from loopml.errors import SpecError
from loopml.evaluate.names import DEFAULT_PRIMARY, TASK_METRICS
from loopml.monitor.alerts import AlertRule

SPEC_FILE = "loopml.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSpec(_Strict):
    """How the held-out evaluation split is cut."""

    test_size: float = Field(0.25, gt=0, lt=1)
    seed: int = 42
    by: Literal["random", "time"] = "random"


class DataSpec(_Strict):
    source: str
    target: str
    features: list[str] | None = None
    id_column: str | None = None
    timestamp: str | None = None
    split: SplitSpec = SplitSpec()


class ColumnContract(_Strict):
    dtype: Literal["int", "float", "number", "bool", "string", "category", "datetime"] | None = None
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[Any] | None = None
    required: bool = True


class ContractSpec(_Strict):
    columns: dict[str, ColumnContract] = {}
    min_rows: int | None = Field(None, ge=0)
    max_rows: int | None = Field(None, ge=0)
    unique: list[str] = []
    _target: str | None = PrivateAttr(None)  # set by loopml.data.contract.contract_for, never from YAML


class EarlyStoppingSpec(_Strict):
    """``model.early_stopping`` (torch): stop when the validation loss has not improved by
    ``min_delta`` for ``patience`` epochs; ``validation_fraction`` of the training split is held
    out for it (seeded by data.split.seed)."""

    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.1, gt=0, lt=1)


TORCH_MLP = "loopml.train.mlp:TabularMLP"
# model fields that only a torch model takes (an sklearn estimator has its own in params)
TORCH_FIELDS = ("module", "loss", "optimizer", "lr", "weight_decay", "epochs", "batch_size", "early_stopping")


class ModelSpec(_Strict):
    """``model``: ``kind: sklearn`` (default) fits ``estimator`` (an import path) with ``params``;
    ``kind: torch`` trains ``module`` ("package.module:Class", built as
    ``Class(in_features, out_features, **params)``; default loopml's MLP) with the loss,
    optimiser, epochs, batch size and early stopping below."""

    kind: Literal["sklearn", "torch"] = "sklearn"
    estimator: str | None = None
    module: str | None = None
    params: dict[str, Any] = {}
    preprocess: Literal["auto", "none"] = "auto"
    loss: Literal["auto", "cross_entropy", "mse", "huber"] = "auto"  # auto: cross_entropy / mse by task
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    early_stopping: EarlyStoppingSpec | None = EarlyStoppingSpec()

    @field_validator("estimator")
    @classmethod
    def _dotted(cls, v: str | None) -> str | None:
        if v is not None and "." not in v:
            raise ValueError(f"expected an import path like 'sklearn.linear_model.LogisticRegression', got '{v}'")
        return v

    @field_validator("module")
    @classmethod
    def _colon_path(cls, v: str | None) -> str | None:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError(f"expected 'package.module:ClassName' (an nn.Module), got '{v}'")
        return v

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> "ModelSpec":
        if self.kind == "sklearn":
            if self.estimator is None:
                raise ValueError("model.estimator: required for an sklearn model (an import path like "
                                 "'sklearn.linear_model.LogisticRegression'), or set model.kind: torch")
            extra = [f for f in TORCH_FIELDS if f in self.model_fields_set]
            if extra:
                raise ValueError(f"model.{extra[0]}: only a torch model takes it (set model.kind: torch), "
                                 "or put the estimator's own setting under model.params")
        else:
            if self.estimator is not None:
                raise ValueError("model.estimator: a torch model names its network in model.module "
                                 "('package.module:ClassName'), not an estimator")
            if self.preprocess == "none":
                raise ValueError("model.preprocess: a torch model always imputes, scales and one-hot encodes "
                                 "its inputs; remove 'none'")
            self.module = self.module or TORCH_MLP
        return self

    @property
    def ref(self) -> str:
        """What is trained: the estimator's or the module's import path."""
        return (self.estimator if self.kind == "sklearn" else self.module) or ""


class EvaluationSpec(_Strict):
    primary_metric: str | None = None
    margin: float = 0.0
    guards: dict[str, float] = {}
    minimum: dict[str, float] = {}
    slices: list[str] = []


class ServingSpec(_Strict):
    """``serving``: the one place serving defaults live. ``loopml serve`` and the server
    ``loopml up`` starts take each value from its CLI flag, else its environment variable
    (loopml.serve.settings.SERVING_ENV), else this section, else these defaults.

    ``allow_unsafe_pickle`` lets the server load pickle/cloudpickle model files, which run
    arbitrary code when loaded: only for models whose author you trust.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = None  # OIP v2 over gRPC beside REST on the same host (None: off)
    max_batch_size: int = Field(64, ge=1)
    max_delay_ms: float = Field(1.0, ge=0)  # the value docs/benchmarks.md measured
    workers: int = Field(1, ge=1)
    allow_unsafe_pickle: bool = False
    # Admission, limits and timeouts: docs/reliability.md says why each default (issue #9).
    max_queue_rows: int = Field(4096, ge=1)  # rows waiting in one model's batching queue
    max_inflight: int = Field(128, ge=0)  # requests admitted per model at once: 2 x max_batch_size (0: no bound)
    deadline_ms: float = Field(15000.0, ge=0)  # per request unless x-loopml-deadline-ms (0: none)
    max_connections: int = Field(2048, ge=1)  # open connections per process
    max_header_bytes: int = Field(32768, ge=1024)  # request line + headers (431 past it)
    header_timeout_s: float = Field(10.0, gt=0)  # to receive a request's headers (408)
    body_timeout_s: float = Field(30.0, gt=0)  # to receive its body after the headers (408)
    keepalive_timeout_s: float = Field(75.0, gt=0)  # idle keep-alive connection closed after
    max_request_id: int = Field(128, ge=1)  # characters of x-request-id / OIP id (400 past it)
    # where a model predicts: "auto" = in a thread when its warm-up batch took > 2 ms, else on
    # the event loop (docs/reliability.md, Overload); "always" / "never" force it
    predict_in_thread: Literal["auto", "always", "never"] = "auto"
    # loopml run converts each new version to ONNX and adopts it on parity (registry/optimize.py);
    # "off" skips it (cost measured in docs/benchmarks.md, "ONNX Runtime")
    onnx: Literal["auto", "off"] = "auto"
    # then dynamic INT8 on top, kept only if the primary metric on the holdout moves by at most
    # quantize_tolerance (registry/quantize.py); size and latency in docs/benchmarks.md
    onnx_quantize: bool = False
    quantize_tolerance: float = Field(0.01, ge=0)

    @field_validator("port", "grpc_port")
    @classmethod
    def _port_range(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 65535:
            raise ValueError(f"{v} is not a valid port; use a number from 0 to 65535 (0 picks a free port)")
        return v


DRIFT_METHODS = ("auto", "ks", "chi2", "psi", "wasserstein", "jensenshannon")
DRIFT_TESTS = ("ks", "chi2")  # judged by p-value at monitoring.fdr, never by a threshold
DRIFT_MIN_ROWS = 30


class FeatureMonitorSpec(_Strict):
    """``monitoring.features.<name>``: how one column's drift is checked (loopml.monitor.drift).

    ``method`` ``auto`` picks by column kind and size; ``threshold`` applies to the distance
    methods (psi, wasserstein, jensenshannon); ``min_rows`` present values are needed for a
    verdict; ``skip`` leaves the column out.
    """

    method: Literal["auto", "ks", "chi2", "psi", "wasserstein", "jensenshannon"] = "auto"
    threshold: float | None = Field(None, gt=0)
    skip: bool = False
    min_rows: int = Field(DRIFT_MIN_ROWS, ge=1)

    @field_validator("threshold")
    @classmethod
    def _threshold_applies(cls, v: float | None, info: ValidationInfo) -> float | None:
        method = info.data.get("method")
        if v is not None and method in DRIFT_TESTS:
            raise ValueError(f"'{method}' is a test judged at monitoring.fdr, it takes no threshold; "
                             "remove it, or pick psi, wasserstein or jensenshannon")
        return v


class PredictionLogSpec(_Strict):
    """How servers write and keep the prediction log (see docs/reliability.md). ``async``
    answers before the rows are on disk (the loss window on a crash is the
    ``loopml_prediction_log_pending_rows`` gauge); ``acknowledged`` answers only after its rows
    are in an fsynced group commit. Retention by age and total size; each server compacts
    small parts into hour files every ``compact_interval_s`` (0: never)."""

    mode: Literal["async", "acknowledged"] = "async"
    retention_days: float | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, ge=1)
    compact_interval_s: float = Field(60.0, ge=0)


class MonitoringSpec(_Strict):
    """Drift checks: ``fdr`` is the Benjamini-Hochberg false-discovery rate across features;
    ``features.<name>`` overrides ``method``, ``threshold``, ``skip``, ``min_rows`` per feature
    (:class:`FeatureMonitorSpec`); ``alerts`` are alert rules (see loopml.monitor.alerts.AlertRule)."""

    window: int = Field(1000, ge=1)
    psi_threshold: float = Field(0.2, gt=0)
    fdr: float = Field(0.05, gt=0, lt=1)
    features: dict[str, FeatureMonitorSpec] = {}
    alerts: list[AlertRule] = []
    prediction_log: PredictionLogSpec = PredictionLogSpec()


class RolloutStep(_Strict):
    """One step of a progressive rollout: shadow (challenger answers off the record) or canary."""

    kind: Literal["shadow", "canary"]
    weight: float = Field(0.0, ge=0, le=1, validate_default=True)  # a canary left without one is an error
    min_requests: int | None = Field(None, ge=1)

    @field_validator("weight")
    @classmethod
    def _weight_fits_kind(cls, v: float, info: ValidationInfo) -> float:
        kind = info.data.get("kind")
        if kind == "canary" and v <= 0:
            raise ValueError("a canary step needs a weight above 0 (the challenger's share of traffic, "
                             "e.g. 0.05); a step with no traffic can never gather evidence")
        if kind == "shadow" and v != 0:
            raise ValueError("a shadow step takes no weight (the challenger answers every request off "
                             "the record); remove it, or make the step a canary")
        return v


def _default_steps() -> list[RolloutStep]:
    return [RolloutStep(kind="shadow", min_requests=200), RolloutStep(kind="canary", weight=0.05),
            RolloutStep(kind="canary", weight=0.25), RolloutStep(kind="canary", weight=0.5)]


class RolloutSpec(_Strict):
    """How a challenger that passed the gate reaches 100%, and when it is rolled back.

    After the last step the challenger is promoted (100%). At each step the controller waits
    for ``min_requests`` challenger answers (shadow or canary), then compares challenger and
    champion over that step: it rolls back when a threshold is crossed and advances otherwise.
    """

    steps: list[RolloutStep] = Field(default_factory=_default_steps)

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, v: list[RolloutStep]) -> list[RolloutStep]:
        if not v:
            raise ValueError("at least one step is needed, e.g. [{kind: shadow}, {kind: canary, weight: 0.1}]; "
                             "leave 'steps' out for the default shadow -> 5% -> 25% -> 50%")
        return v
    min_requests: int = Field(100, ge=1)
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)
    max_p99_ratio: float = Field(2.0, gt=0)
    p99_slack_ms: float = Field(5.0, ge=0)
    max_prediction_divergence: float | None = Field(None, ge=0, le=1)
    min_shadow_agreement: float | None = Field(None, ge=0, le=1)
    max_online_metric_drop: float | None = Field(None, ge=0)
    step_timeout_s: float = Field(600.0, gt=0)
    latency_budget_ms: float | None = Field(50.0, gt=0)


class TriggerSpec(_Strict):
    """What starts a retraining: drift, a schedule, new data; ``loopml retrain`` always can."""

    on_drift: bool = True
    drift_check_interval_s: float = Field(10.0, gt=0)
    drift_min_rows: int = Field(500, ge=1)
    interval_s: float | None = Field(None, gt=0)
    watch: str | None = None
    debounce_s: float = Field(30.0, ge=0)


class RetrainSpec(_Strict):
    """The training window of automatic retraining."""

    source: str | None = None  # default: data.source; a folder means every CSV/Parquet file in it
    include_reference: bool = False
    max_rows: int | None = Field(None, ge=1)
    # `loopml up` listens for Alertmanager's webhook (POST /alerts) on 127.0.0.1:PORT; off when
    # unset; LOOPML_WEBHOOK_PORT overrides it (0: any free port); see loopml.loop.webhook (#11)
    webhook_port: int | None = Field(None, ge=0, le=65535)


class TrainingSpec(_Strict):
    """``training``: where the model is fitted. ``backend: local`` fits in-process; ``ray`` hands
    the fit to Ray (a torch model to Ray Train's TorchTrainer with ``workers`` DDP workers over
    gloo, checkpointing every ``checkpoint_every`` epochs and restarting up to ``max_failures``
    times from the last checkpoint; torch models only). ``ray_address``
    (else ``LOOPML_RAY_ADDRESS``) names a running cluster; with neither loopml starts a local
    Ray on this machine's cores and stops it after."""

    backend: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=-1)  # -1: retry without limit (Ray's convention)
    checkpoint_every: int = Field(1, ge=1)
    ray_address: str | None = None
    # where Ray Train writes checkpoints: ``s3://bucket/prefix`` (endpoint and credentials from
    # AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or a local folder; None:
    # <home>/artifacts/ray-train, which only a single-machine Ray can share
    checkpoint_uri: str | None = None

    @field_validator("checkpoint_uri")
    @classmethod
    def _checkpoint_uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme, sep, rest = v.partition("://")
        if not sep:
            if not v.strip():
                raise ValueError("expected s3://bucket/prefix or a local folder, got ''")
            return v
        bucket = rest.split("/", 1)[0]
        if scheme != "s3" or not bucket:
            raise ValueError(f"expected s3://bucket/prefix or a local folder, got '{v}'")
        return v


class SearchDim(_Strict):
    """One ``tuning.search_space`` entry: ``{type: uniform|loguniform, low, high}`` (floats),
    ``{type: randint, low, high}`` (integers, high exclusive, as Ray Tune) or
    ``{type: choice, values: [...]}``, also written ``{choice: [...]}``."""

    type: Literal["uniform", "loguniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _choice_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"choice"}:
            return {"type": "choice", "values": v["choice"]}
        return v

    @model_validator(mode="after")
    def _range(self) -> "SearchDim":
        if self.type == "choice":
            if not self.values or self.low is not None or self.high is not None:
                raise ValueError("a choice takes a non-empty 'values' list and no low/high")
            return self
        if self.low is None or self.high is None or self.values is not None:
            raise ValueError(f"{self.type} takes 'low' and 'high' (and no values)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low:g}")
        if self.type == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("randint takes whole numbers for low and high (high is exclusive)")
        return self


class TuningSpec(_Strict):
    """``tuning``: ``loopml tune`` runs Ray Tune over ``search_space`` (model.params names, and for
    a torch model also lr, weight_decay, batch_size, optimizer), ``num_samples`` trials, at most
    ``max_concurrent`` at once (default: the cluster's CPUs), ranking by ``metric`` (default
    evaluation.primary_metric) on ``validation_fraction`` of the training split, ``mode``
    defaulting to the metric's direction; ``scheduler: asha`` stops poor torch trials early."""

    search_space: dict[str, SearchDim] = Field(min_length=1)
    num_samples: int = Field(8, ge=1)
    metric: str | None = None
    mode: Literal["max", "min"] | None = None
    scheduler: Literal["asha", "none"] = "asha"
    max_concurrent: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1)


class ProjectSpec(_Strict):
    """The whole of ``loopml.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["classification", "regression"]
    data: DataSpec
    contract: ContractSpec = ContractSpec()
    model: ModelSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    serving: ServingSpec = ServingSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    rollout: RolloutSpec = RolloutSpec()
    triggers: TriggerSpec = TriggerSpec()
    retrain: RetrainSpec = RetrainSpec()
    training: TrainingSpec = TrainingSpec()
    tuning: TuningSpec | None = None

    @model_validator(mode="after")
    def _defaults(self) -> "ProjectSpec":
        if self.evaluation.primary_metric is None:
            self.evaluation.primary_metric = DEFAULT_PRIMARY[self.task]
        return self

    def feature_columns(self, columns: list[str]) -> list[str]:
        """The model's input columns: the spec's list, or every column but target/id/timestamp."""
        if self.data.features:
            return list(self.data.features)
        skip = {self.data.target, self.data.id_column, self.data.timestamp}
        return [c for c in columns if c not in skip]


_TYPE_WORDS = {
    "int": "integer", "float": "number", "bool": "boolean", "string": "string",
    "dict": "mapping", "list": "list", "literal": "one of",
}


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    given = err.get("input")
    if kind == "missing":
        return f"{loc}: required field missing"
    if kind == "extra_forbidden":
        known = _known_keys(model, err["loc"][:-1])
        hint = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        tip = f"; did you mean '{hint[0]}'?" if hint else (f"; known keys: {', '.join(sorted(known))}" if known else "")
        return f"{loc}: unknown key{tip}"
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(_annotation(model, err["loc"]))]
        if choices:
            return f"{loc}: {given!r} is not one of {', '.join(choices)}{_did_you_mean(given, choices)}"
    if kind == "value_error":  # our own validators: the message already says what to do
        msg = str(err['msg']).removeprefix('Value error, ')
        return msg if msg.startswith(f"{loc}.") else f"{loc}: {msg}"  # a model validator naming its field
    for prefix, word in _TYPE_WORDS.items():
        if kind.startswith(prefix) and kind != "literal_error":
            return f"{loc}: expected {word}, got {given!r}"
    return f"{loc}: {err['msg']}, got {given!r}"


def _did_you_mean(given: Any, choices: list[str] | tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(str(given), list(choices), n=1)
    return f"; did you mean '{hint[0]}'?" if hint else ""


def _unwrap(annotation: Any) -> tuple[Any, int]:
    """The model or Literal inside ``X | None`` / ``list[X]`` / ``dict[str, X]``, and how many
    list/dict layers were stepped through (each is one index or key in an error's loc)."""
    layers = 0
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Literal or not args:
            return annotation, layers
        layers += origin in (list, dict)
        annotation = [a for a in args if a is not type(None)][-1]  # dict[str, X], list[X], X | None -> X


def _annotation(model: type[BaseModel], loc: tuple) -> Any:
    """The annotation at ``loc`` inside ``model`` (None when the path leaves the models)."""
    current: Any = model
    skip = 0
    for part in loc:
        if skip:
            skip -= 1  # a dict key or a list index
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        current, skip = _unwrap(field.annotation)
    return current


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    return list(getattr(_annotation(model, loc), "model_fields", {}).keys())


def _metric_problem(field: str, metric: str, task: str) -> str | None:
    """None when ``task`` computes ``metric``, else what is wrong (with a close name if any)."""
    known = TASK_METRICS[task]
    if metric in known:
        return None
    elsewhere = [t for t, ms in TASK_METRICS.items() if metric in ms]
    why = f"is computed for {elsewhere[0]}, not for a {task} task" if elsewhere else f"is not a {task} metric"
    return f"{field}: '{metric}' {why}; use one of {', '.join(known)}{_did_you_mean(metric, known)}"


def _semantic_problems(spec: ProjectSpec) -> list[str]:
    """What no single field can check: metric names against the task, slice guards against
    the slice columns, per-feature monitoring against the declared features."""
    ev, task = spec.evaluation, spec.task
    problems = [_metric_problem("evaluation.primary_metric", ev.primary_metric or DEFAULT_PRIMARY[task], task)]
    problems += [_metric_problem(f"evaluation.minimum.{m}", m, task) for m in ev.minimum]
    for key in ev.guards:
        field = f"evaluation.guards.{key}"
        if not key.startswith("slice:"):
            problems.append(_metric_problem(field, key, task))
            continue
        parts = key.split(":")
        where = parts[1].split("=", 1) if len(parts) == 3 else []
        if len(where) != 2 or not all(where) or not parts[2]:
            problems.append(f"{field}: a slice guard is written slice:<column>=<value>:<metric>, "
                            "e.g. slice:country=BR:recall")
            continue
        if where[0] not in ev.slices:
            problems.append(f"{field}: column '{where[0]}' is not in evaluation.slices, so this slice is never "
                            f"evaluated; add it there{_did_you_mean(where[0], ev.slices)}")
        problems.append(_metric_problem(field, parts[2], task))
    if spec.data.features:
        for name in spec.monitoring.features:
            if name not in spec.data.features:
                problems.append(f"monitoring.features.{name}: not one of data.features"
                                f"{_did_you_mean(name, spec.data.features)}")
    if spec.training.backend == "ray" and spec.model.kind != "torch":
        problems.append("training.backend: ray trains torch models (model.kind: torch); an sklearn estimator "
                        "trains in-process, so use backend: local")
    return [p for p in problems if p]


def parse_spec(raw: Any, path: str = SPEC_FILE) -> ProjectSpec:
    """Validate a parsed YAML document; raise :class:`SpecError` listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError(path, "expected a mapping at the top level (name, task, data, model, ...)")
    try:
        spec = ProjectSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(path, [_describe(e, ProjectSpec) for e in exc.errors()]) from None
    problems = _semantic_problems(spec)
    if problems:
        raise SpecError(path, problems)
    _check_estimator_params(spec, path)
    return spec


def _check_estimator_params(spec: ProjectSpec, path: str) -> None:
    """Check ``model`` against the trainer of its kind (estimator or module importable, params
    accepted by its own declared constraints)."""
    from loopml.train.contract import check_model_spec  # lazy: the trainer imports sklearn/torch

    check_model_spec(spec, path)
    if spec.tuning is not None:
        from loopml.train.tune_space import check_tuning  # lazy, like the model check

        check_tuning(spec, path)


def load_spec(project: str | Path = ".") -> ProjectSpec:
    """Read ``loopml.yaml`` from a project folder (or a path to the file itself)."""
    import yaml

    p = Path(project)
    if p.is_dir():
        p = p / SPEC_FILE
    if not p.exists():
        raise SpecError(str(p), "file not found; create one with 'loopml new NAME' or pass --project")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(str(p), f"{where}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise SpecError(str(p), f"cannot read ({exc.strerror})") from None
    spec = parse_spec(raw, str(p.name if p.parent == Path('.') else p))
    return spec
