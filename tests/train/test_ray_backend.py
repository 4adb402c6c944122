"""``training.checkpoint_uri``: checked where the spec is read, and an object store that cannot
take a write fails the train step at once with one line naming the setting (no Ray needed)."""

from __future__ import annotations

import pytest
import yaml

from loopml.config import Workspace
from loopml.errors import PipelineStepFailed, SpecError
from loopml.platform.base import free_port
from loopml.spec import parse_spec
from loopml.train.ray_backend import checkpoint_storage


def _spec(project, uri):
    raw = yaml.safe_load((project / "loopml.yaml").read_text())
    raw["training"] = {"backend": "ray", "workers": 2, "checkpoint_uri": uri}
    return parse_spec(raw)


@pytest.mark.parametrize("uri", ["gs://bucket/ckpt", "s3:///ckpt", "http://store/ckpt", " "])
def test_bad_checkpoint_uri_names_the_field(torch_project, uri):
    with pytest.raises(SpecError) as e:
        _spec(torch_project, uri)
    assert "training.checkpoint_uri: expected s3://bucket/prefix or a local folder" in str(e.value)
    assert "\n" not in str(e.value)


def test_default_and_local_folder(torch_project, tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert checkpoint_storage(_spec(torch_project, None), ws) == (str(ws.artifacts / "ray-train"), None)
    path, fs = checkpoint_storage(_spec(torch_project, str(tmp_path / "ckpt")), ws)
    assert (path, fs) == (str(tmp_path / "ckpt"), None) and (tmp_path / "ckpt").is_dir()


def test_unreachable_object_store_fails_the_step_naming_the_setting(torch_project, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(PipelineStepFailed) as e:
        checkpoint_storage(_spec(torch_project, "s3://bucket/ckpt"), Workspace(tmp_path / "ws"))
    msg = str(e.value)
    assert msg.startswith("step 'train' failed: training.checkpoint_uri s3://bucket/ckpt: the object store refused")
    assert "AWS_ENDPOINT_URL" in msg and "\n" not in msg
    assert not (tmp_path / "ws" / "artifacts" / "ray-train").exists()  # no silent local fallback
