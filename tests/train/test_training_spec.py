"""The ``training`` section: Ray back end settings, checked where the spec is read."""

from __future__ import annotations

import pytest
import yaml

from loopml.errors import SpecError
from loopml.spec import parse_spec


def _raw(project, **training):
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["training"] = training
    return raw


def test_ray_backend_settings_parse(torch_project):
    spec = parse_spec(_raw(torch_project, backend="ray", workers=2, max_failures=3, checkpoint_every=2,
                           ray_address="ray://head:10001"))
    t = spec.training
    assert (t.backend, t.workers, t.max_failures, t.checkpoint_every, t.ray_address) == ("ray", 2, 3, 2, "ray://head:10001")
    assert parse_spec(_raw(torch_project)).training.backend == "local"


@pytest.mark.parametrize("training, expected", [
    ({"backend": "spark"}, "training.backend: 'spark' is not one of local, ray"),
    ({"workers": 0}, "training.workers:"),
    ({"checkpoint_every": 0}, "training.checkpoint_every:"),
    ({"worker": 2}, "training.worker: unknown key; did you mean 'workers'?"),
])
def test_bad_training_settings_name_the_field(torch_project, training, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(_raw(torch_project, **training))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_ray_backend_is_for_torch_models(torch_project):
    raw = _raw(torch_project, backend="ray")
    raw["model"] = {"estimator": "sklearn.linear_model.LogisticRegression"}
    with pytest.raises(SpecError, match="training.backend: ray trains torch models"):
        parse_spec(raw)
