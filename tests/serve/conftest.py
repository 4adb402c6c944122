"""Fixtures for serving tests: small real scikit-learn models behind an in-memory registry
(fast, no MLflow), and servers on 127.0.0.1 in a background thread."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from loopml.config import Workspace
from loopml.errors import ModelNotFound, RegistryUnavailable
from loopml.registry.client import ModelVersionRef
from loopml.serve.server import ServerHandle
from loopml.serve.settings import ServeSettings

FEATURES = ["f0", "f1", "f2", "f3"]


def numeric_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 4)), columns=FEATURES)


def clf_model(flip: bool = False) -> Pipeline:
    X = numeric_frame(400, 0)
    y = ((X["f0"] + 0.5 * X["f1"]) > 0).astype(int)
    if flip:
        y = 1 - y
    return Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)


def reg_model() -> LinearRegression:
    X = numeric_frame(200, 1)
    return LinearRegression().fit(X, 2 * X["f0"] - X["f3"])


def mixed_model() -> Pipeline:
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"x": rng.normal(size=300), "n": rng.integers(0, 5, 300),
                      "c": rng.choice(["a", "b", "c"], 300), "flag": rng.random(300) > 0.5})
    y = np.where((X["x"] > 0) & (X["c"] != "a"), "yes", "no")
    pre = ColumnTransformer([("num", StandardScaler(), ["x", "n"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["c"]),
                             ("flag", "passthrough", ["flag"])])
    return Pipeline([("pre", pre), ("lr", LogisticRegression())]).fit(X, y)


NUM_SIG = {"inputs": [{"name": f, "type": "double"} for f in FEATURES], "outputs": []}
MIXED_SIG = {"inputs": [{"name": "x", "type": "double"}, {"name": "n", "type": "long"},
                        {"name": "c", "type": "string"}, {"name": "flag", "type": "boolean"}], "outputs": []}


class FakeRegistry:
    """The part of loopml.registry.client.Registry the server uses, in memory.

    ``unavailable = True`` makes every lookup raise RegistryUnavailable, as the real Registry
    does when the tracking server cannot be asked; ``examples`` holds input examples by
    (name, version) for the sources that log one."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, tuple]] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.examples: dict[tuple[str, str], pd.DataFrame] = {}
        self.lock = threading.Lock()
        self.loads = 0
        self.unavailable = False

    def add(self, name: str, model, signature: dict, *aliases: str) -> str:
        with self.lock:
            vs = self.versions.setdefault(name, {})
            version = str(len(vs) + 1)
            vs[version] = (model, signature)
        for a in aliases:
            self.set_alias(name, a, version)
        return version

    def set_alias(self, name: str, alias: str, version: str, why: str = "") -> None:
        with self.lock:
            self.aliases.setdefault(name, {})[alias] = str(version)

    def delete_alias(self, name: str, alias: str) -> None:
        with self.lock:
            self.aliases.get(name, {}).pop(alias, None)

    def resolve(self, name: str, ref: str = "champion") -> ModelVersionRef:
        if self.unavailable:
            raise RegistryUnavailable("memory://fake", "told to be unavailable")
        with self.lock:
            version = ref if ref.isdigit() else self.aliases.get(name, {}).get(ref)
            if version is None or version not in self.versions.get(name, {}):
                raise ModelNotFound(name, ref)
            aliases = [a for a, v in self.aliases.get(name, {}).items() if v == version]
        return ModelVersionRef(name, version, None, f"memory://{name}/{version}", aliases, {})

    def load_native(self, ref: ModelVersionRef):
        self.loads += 1
        return self.versions[ref.name][ref.version][0]

    def signature(self, ref: ModelVersionRef) -> dict:
        return self.versions[ref.name][ref.version][1]

    def input_example(self, ref: ModelVersionRef):
        return self.examples.get((ref.name, ref.version))


@pytest.fixture(scope="session")
def trained():
    return {"clf": clf_model(), "clf_flip": clf_model(flip=True), "reg": reg_model(), "mixed": mixed_model()}


@pytest.fixture
def fake_registry(trained) -> FakeRegistry:
    reg = FakeRegistry()
    reg.add("clf", trained["clf"], NUM_SIG, "champion")
    reg.add("clf", trained["clf_flip"], NUM_SIG, "challenger")
    reg.add("reg", trained["reg"], NUM_SIG, "champion")
    reg.add("mixed", trained["mixed"], MIXED_SIG, "champion")
    return reg


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.from_env(tmp_path / "ws").init()


@pytest.fixture
def make_server(workspace, fake_registry):
    started: list[ServerHandle] = []

    def make(endpoints=("clf", "reg", "mixed"), **settings):
        base = dict(poll_interval_s=0.1, max_delay_ms=1.0)
        base.update(settings)
        h = ServerHandle(workspace, list(endpoints), ServeSettings(**base).validate(), registry=fake_registry)
        started.append(h.start())
        return h

    yield make
    for h in started:
        h.stop()


@pytest.fixture
def server(make_server) -> ServerHandle:
    return make_server()


@pytest.fixture(autouse=True)
def _quiet_feature_name_warning():
    """The fast lane feeds sklearn plain matrices on purpose (see ModelRuntime.fast)."""
    import warnings

    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    yield
