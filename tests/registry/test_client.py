import json

import pandas as pd
import pytest

from loopml.errors import ModelNotFound, RegistrationError
from loopml.registry import audit
from loopml.registry.client import CHAMPION, Registry, parse_model_ref


def test_parse_model_ref():
    assert parse_model_ref("fraud") == ("fraud", "champion")
    assert parse_model_ref("fraud@challenger") == ("fraud", "challenger")
    assert parse_model_ref("fraud/3") == ("fraud", "3")


def test_resolve_load_signature(registered_model):
    ws, name = registered_model
    reg = Registry(ws)
    ref = reg.resolve(name)
    assert ref.version == "1" and CHAMPION in reg.versions(name)[0].aliases
    model = reg.load_native(ref)
    sig = reg.signature(ref)
    names = [c["name"] for c in sig["inputs"]]
    assert "amount" in names and "is_fraud" not in names
    row = pd.DataFrame([{n: 1.0 for n in names}]).assign(merchant_category="grocery", country="US")
    assert model.predict(row[names]).shape == (1,)
    profile = reg.reference_profile(ref)
    assert profile.columns["amount"].kind == "numeric"
    with pytest.raises(ModelNotFound):
        reg.resolve(name, "7")
    with pytest.raises(ModelNotFound):
        reg.resolve("nope")


def test_promote_rollback_history_and_audit(registered_model, project):
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec

    ws, name = registered_model
    reg = Registry(ws)
    spec = load_spec(project)
    r2 = run_pipeline(spec, ws, project_dir=project, source=str(project / "data" / "transactions_recent.csv"))
    assert r2.version == "2" and r2.promoted
    assert reg.resolve(name).version == "2"
    back = reg.rollback(name, "test says so")
    assert (back.previous, back.version, back.action) == ("2", "1", "rollback")
    assert reg.resolve(name).version == "1"
    tags = reg.resolve(name, "1").tags
    assert tags["loopml.champion_why"] == "test says so" and tags["loopml.champion_by"]
    changes = reg.history(name)
    assert [c.version for c in changes if c.alias == CHAMPION] == ["1", "2", "1"]
    # the audit log is JSON lines, one per change, and survives a torn last line
    with open(ws.audit_log, "a") as fh:
        fh.write('{"ts": 1, "model": "fr')
    assert len(audit.read(ws.audit_log, name)) == len(changes)
    assert all(json.loads(l)["model"] == name for l in ws.audit_log.read_text().splitlines()[:-1])


def test_promote_unknown_version_changes_nothing(registered_model):
    ws, name = registered_model
    reg = Registry(ws)
    before = ws.audit_log.read_text()
    with pytest.raises(ModelNotFound):
        reg.promote(name, "42")
    assert ws.audit_log.read_text() == before
    assert reg.resolve(name).version == "1"
    with pytest.raises(RegistrationError, match="no earlier champion"):
        reg.rollback(name)


def test_broken_version_never_gets_an_alias(registered_model, tmp_path):
    ws, name = registered_model
    reg = Registry(ws)
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "MLmodel").write_text("flavors: {}\n")
    run_id = reg.resolve(name).run_id
    with pytest.raises(RegistrationError, match="does not load"):
        reg.register(str(bogus), name, run_id, {})
    broken = reg.versions(name)[-1]
    assert broken.version == "2" and broken.tags.get("loopml.status") == "broken" and broken.aliases == []
    assert reg.resolve(name).version == "1"


def test_ensure_alias_restores_a_lost_audit_record(registered_model, project):
    from loopml.loop.pipeline import run_pipeline
    from loopml.spec import load_spec

    ws, name = registered_model
    reg = Registry(ws)
    run_pipeline(load_spec(project), ws, project_dir=project, auto_promote=False,
                 source=str(project / "data" / "transactions_recent.csv"))
    # a crash after MLflow moved the alias but before the audit line was written:
    reg.client.set_registered_model_alias(name, CHAMPION, "2")
    reg.ensure_alias(name, CHAMPION, "2", "rollout 1")
    champ = [c for c in reg.history(name) if c.alias == CHAMPION]
    assert champ[-1].version == "2" and "recorded on resume" in champ[-1].why
    n = len(reg.history(name))
    reg.ensure_alias(name, CHAMPION, "2", "rollout 1")  # idempotent
    assert len(reg.history(name)) == n


def test_a_registered_model_names_its_pinned_requirements(registered_model, tmp_path, monkeypatch):
    """loopml names the model's requirements (MLflow would otherwise load it in a subprocess
    to infer them: about 4 s of every registration): each package of the pipeline's objects,
    pinned to the installed version, and nothing inferred."""
    import importlib.metadata as md

    import mlflow.utils.environment as menv

    from loopml.registry.client import _requirements

    ws, name = registered_model
    reg = Registry(ws)
    ref = reg.resolve(name)
    local = reg.download(ref, str(tmp_path / "m"))
    with open(f"{local}/requirements.txt") as f:
        listed = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert f"scikit-learn=={md.version('scikit-learn')}" in listed and f"skops=={md.version('skops')}" in listed
    assert f"mlflow=={md.version('mlflow')}" in listed and not any(r.startswith("mlflow-skinny") for r in listed)
    import lightgbm

    assert f"lightgbm=={md.version('lightgbm')}" in _requirements(lightgbm.LGBMClassifier())
    # a new registration never runs MLflow's requirement inference
    called = []
    monkeypatch.setattr(menv, "_infer_requirements", lambda *a, **k: called.append(a) or [])
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    with reg.run("reqs") as run:
        run.log_model(LogisticRegression().fit(X, [0, 1, 0, 1]), X.head(2))
    assert called == []
