"""The ``tuning`` section: checked where the spec is read, one line naming the field; and the
pieces of a tuning run that need no Ray (tuned spec, split, a trial's reports)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from loopml.errors import SpecError
from loopml.spec import parse_spec
from tests.train.conftest import tabular_frame, write_project

SKLEARN = {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 5}}
TORCH = {"kind": "torch", "params": {"hidden": [8]}, "epochs": 3, "batch_size": 32, "early_stopping": None}


def _raw(tmp_path, model, tuning):
    proj = write_project(tmp_path / "proj", model)
    raw = yaml.safe_load((proj / "loopml.yaml").read_text())
    raw["tuning"] = tuning
    return raw


def test_a_search_space_parses_with_defaults(tmp_path):
    spec = parse_spec(_raw(tmp_path, SKLEARN, {"search_space": {
        "max_depth": {"type": "randint", "low": 2, "high": 8},
        "min_samples_leaf": {"choice": [1, 2, 4]},
        "max_features": {"type": "uniform", "low": 0.3, "high": 1.0}}, "num_samples": 6}))
    t = spec.tuning
    assert t.search_space["min_samples_leaf"].type == "choice" and t.search_space["min_samples_leaf"].values == [1, 2, 4]
    assert (t.num_samples, t.scheduler, t.metric, t.mode) == (6, "asha", None, None)
    from loopml.train.tune_space import metric_and_mode

    assert metric_and_mode(spec) == ("roc_auc", "max")


@pytest.mark.parametrize("model, tuning, expected", [
    (SKLEARN, {"search_space": {"max_dept": {"type": "randint", "low": 2, "high": 8}}},
     "tuning.search_space.max_dept: value 2: RandomForestClassifier has no parameter 'max_dept'; did you mean 'max_depth'?"),
    (SKLEARN, {"search_space": {"max_depth": {"type": "randint", "low": 0, "high": 8}}},
     "tuning.search_space.max_depth: value 0:"),
    (SKLEARN, {"search_space": {"max_depth": {"type": "randint", "low": 8, "high": 2}}},
     "tuning.search_space.max_depth: low (8) must be below high (2)"),
    (SKLEARN, {"search_space": {"max_features": {"type": "loguniform", "low": 0, "high": 1}}},
     "tuning.search_space.max_features: loguniform needs low > 0"),
    (SKLEARN, {"search_space": {"max_depth": {"type": "normal", "low": 1, "high": 2}}},
     "tuning.search_space.max_depth.type: 'normal' is not one of uniform, loguniform, randint, choice"),
    (SKLEARN, {"search_space": {"max_depth": {"choice": []}}}, "tuning.search_space.max_depth: a choice takes"),
    (SKLEARN, {"search_space": {}}, "tuning.search_space:"),
    (SKLEARN, {"search_space": {"max_depth": {"choice": [3]}}, "metric": "rmse"},
     "tuning.metric: 'rmse' is not a classification metric"),
    (SKLEARN, {"search_space": {"max_depth": {"choice": [3]}}, "mode": "min"},
     "tuning.mode: 'min' would pick the worst trials: roc_auc is better when higher"),
    (SKLEARN, {"search_space": {"max_depth": {"choice": [3]}}, "num_samples": 0}, "tuning.num_samples:"),
    (SKLEARN, {"search_space": {"max_depth": {"choice": [3]}}, "scheduler": "hyperband"},
     "tuning.scheduler: 'hyperband' is not one of asha, none"),
    (TORCH, {"search_space": {"lr": {"type": "uniform", "low": -0.1, "high": 0.1}}},
     "tuning.search_space.lr: value -0.1:"),
    (TORCH, {"search_space": {"hiden": {"choice": [[8]]}}},
     "tuning.search_space.hiden: value [8]: TabularMLP has no parameter 'hiden'; did you mean 'hidden'? "
     "(or one of lr, weight_decay, batch_size, optimizer)"),
])
def test_bad_tuning_names_the_field(tmp_path, model, tuning, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(_raw(tmp_path, model, tuning))
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_tuned_spec_applies_params_and_torch_loop_settings(tmp_path):
    import numpy as np

    from loopml.train.tune_space import tuned_spec

    spec = parse_spec(_raw(tmp_path, TORCH, {"search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
                                                              "hidden": {"choice": [[8], [16]]}}}))
    t = tuned_spec(spec, {"lr": np.float64(0.02), "hidden": [16], "batch_size": np.int64(8)})
    assert (t.model.lr, t.model.batch_size, t.model.params["hidden"]) == (0.02, 8, [16])
    assert type(t.model.batch_size) is int and spec.model.lr == 1e-3  # the original is untouched
    assert t.tuning == spec.tuning and t.model.epochs == 3


def test_trial_reports_metrics_per_epoch_for_torch_once_for_sklearn(tmp_path):
    from loopml.train.tune import run_trial, tuning_split

    df = tabular_frame(300)
    for model, expected in ((TORCH, [1, 2, 3]), (SKLEARN, [1])):
        spec = parse_spec(_raw(tmp_path, model, {"search_space": {"lr" if model is TORCH else "max_depth":
                                                                  {"choice": [0.01] if model is TORCH else [3]}}}))
        fit, val = tuning_split(spec, df)
        assert len(val) == 60 and not set(fit.index) & set(val.index)
        reports = []
        run_trial({"lr": 0.01} if model is TORCH else {"max_depth": 3}, spec, fit, val, reports.append)
        assert [r["epoch"] for r in reports] == expected
        assert all(0.5 < r["roc_auc"] <= 1 and "accuracy" in r for r in reports)


def test_loopml_tune_without_tuning_section_is_exit_2(tmp_path):
    proj = write_project(tmp_path / "proj", SKLEARN)
    env = {**os.environ, "LOOPML_HOME": str(tmp_path / "ws")}
    env.pop("LOOPML_TRACKING_URI", None)
    p = subprocess.run([sys.executable, "-m", "loopml.cli.main", "tune", "--project", str(proj)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().startswith("error: loopml.yaml: tuning: missing;") and len(p.stderr.strip().splitlines()) == 1
