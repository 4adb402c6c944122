"""Never trust a model that was not checked (#8): pickle refused unless opted in, every alias
move loads and predicts first, rolled-back versions are blocked until promoted by hand."""

import pandas as pd
import pytest

from loopml.errors import ModelCheckFailed, UnsafeModelFormat
from loopml.registry import audit
from loopml.registry.client import CHAMPION, Registry
from tests.registry.mlflow_raw import Payload, fitted, frame, register_raw


def test_pickle_is_refused_before_it_is_deserialised(workspace, tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPML_ALLOW_UNSAFE_PICKLE", raising=False)
    marker = tmp_path / "payload-ran"
    X, _ = frame(5)
    version, _ = register_raw(workspace, "evil", Payload(marker), fmt="pickle", input_example=X)
    marker.unlink(missing_ok=True)  # saving may have round-tripped it; only loading counts here

    reg = Registry(workspace)
    ref = reg.resolve("evil", version)
    with pytest.raises(UnsafeModelFormat, match="pickle"):
        reg.load_native(ref)
    with pytest.raises(UnsafeModelFormat):
        reg.promote("evil", version)
    assert not marker.exists()
    assert reg.try_resolve("evil", CHAMPION) is None

    # the opt-in, by argument or by environment, loads it (and so runs its code)
    model = Registry(workspace, allow_unsafe_pickle=True).load_native(ref)
    assert marker.exists() and model.predict(X).shape == (5,)
    marker.unlink()
    monkeypatch.setenv("LOOPML_ALLOW_UNSAFE_PICKLE", "true")
    Registry(workspace).promote("evil", version)
    assert Registry(workspace).resolve("evil").version == version


def test_cloudpickle_is_refused_too(workspace, monkeypatch):
    monkeypatch.delenv("LOOPML_ALLOW_UNSAFE_PICKLE", raising=False)
    version, _ = register_raw(workspace, "cp", fitted(), fmt="cloudpickle")
    reg = Registry(workspace)
    with pytest.raises(UnsafeModelFormat, match="cloudpickle"):
        reg.load_native(reg.resolve("cp", version))


def test_a_version_that_fails_its_prediction_gets_no_alias(workspace):
    X, _ = frame(5)
    good, _ = register_raw(workspace, "m", fitted(), input_example=X)
    reg = Registry(workspace)
    reg.promote("m", good)
    # loads fine, but its own input example lacks a column the model needs
    bad, _ = register_raw(workspace, "m", fitted(), input_example=X.rename(columns={"b": "c"}))
    lines = audit.read(workspace.audit_log, "m")
    with pytest.raises(ModelCheckFailed, match=r"model 'm' version 2") as info:
        reg.promote("m", bad, "looks fine to me")
    assert "feature" in info.value.reason
    assert reg.resolve("m").version == good
    assert reg.resolve("m", bad).tags["loopml.status"] == "broken"
    assert audit.read(workspace.audit_log, "m") == lines  # no line claims a move
    with pytest.raises(ModelCheckFailed):
        reg.ensure_alias("m", CHAMPION, bad, "controller")
    with pytest.raises(ModelCheckFailed):
        reg.set_alias("m", "challenger", bad, "admin")
    assert reg.try_resolve("m", "challenger") is None


def test_no_input_example_falls_back_to_the_signature_then_fails_closed(workspace, monkeypatch):
    from mlflow.models import infer_signature

    import mlflow.sklearn

    X, y = frame(5)
    model = fitted()
    version, stored = register_raw(workspace, "s", model)  # no example, no signature
    reg = Registry(workspace)
    with pytest.raises(ModelCheckFailed, match="no input example"):
        reg.promote("s", version)
    # with a signature, a row is synthesised from it
    sig = infer_signature(X, model.predict(X))
    real_save = mlflow.sklearn.save_model
    monkeypatch.setattr(mlflow.sklearn, "save_model", lambda *a, **kw: real_save(*a, signature=sig, **kw))
    v2, _ = register_raw(workspace, "s", model)
    assert reg.promote("s", v2).version == v2


def test_a_passed_check_is_not_repeated(workspace, monkeypatch):
    X, _ = frame(5)
    v, _ = register_raw(workspace, "m", fitted(), input_example=X)
    reg = Registry(workspace)
    loads = []
    real = reg._load_local
    monkeypatch.setattr(reg, "_load_local", lambda *a: loads.append(a) or real(*a))
    reg.set_alias("m", "challenger", v, "one")
    reg.promote("m", v, "two")
    reg.ensure_alias("m", CHAMPION, v, "three")
    assert len(loads) == 1


def test_rollback_blocks_the_version_and_a_hand_promotion_unblocks_it(workspace):
    X, _ = frame(5)
    v1, _ = register_raw(workspace, "m", fitted(), input_example=X)
    v2, _ = register_raw(workspace, "m", fitted(), input_example=X)
    reg = Registry(workspace)
    reg.promote("m", v1)
    reg.promote("m", v2)
    assert reg.resolve("m", v2).blocked is None
    back = reg.rollback("m", "bad latency")
    assert back.version == v1
    ref = reg.resolve("m", v2)
    assert ref.blocked and "bad latency" in ref.blocked
    assert [(c.action, c.version) for c in reg.history("m") if c.alias == "blocked"] == [("block", v2)]
    reg.promote("m", v2, "fixed upstream")
    assert reg.resolve("m", v2).blocked is None
    assert [c.action for c in reg.history("m") if c.alias == "blocked"] == ["block", "unblock"]
    # block()/unblock() are what the controller calls on an automatic rollback
    reg.block("m", v1, "automatic rollback: error rate")
    assert reg.resolve("m", v1).blocked == "automatic rollback: error rate"
    reg.unblock("m", v1)
    assert reg.resolve("m", v1).blocked is None


def test_input_example_is_the_logged_one_and_the_server_smoke_predicts_on_it(workspace):
    from loopml.serve.runtime import ModelRuntime

    X, _ = frame(5)
    with_example, _ = register_raw(workspace, "ex", fitted(), input_example=X)
    without, _ = register_raw(workspace, "ex", fitted())
    reg = Registry(workspace)
    got = reg.input_example(reg.resolve("ex", with_example))
    pd.testing.assert_frame_equal(pd.DataFrame(got).reset_index(drop=True), X, check_dtype=False)
    assert reg.input_example(reg.resolve("ex", without)) is None
    runtime = ModelRuntime(reg, reg.resolve("ex", with_example)).load()
    rows, what = runtime.smoke_rows()
    assert what == "its input example" and rows.n == 5
