"""pyproject.toml declares what src/loopml imports, and nothing it does not use.

Every third-party top-level import in ``src/loopml`` (at module level or lazily inside a
function) must be provided by a distribution named in ``[project].dependencies`` or in an
extra; every base dependency must be imported somewhere, or be listed in
:data:`USED_WITHOUT_IMPORT` with the reason.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "loopml"

# import name -> distributions that provide it, for names that differ (used when the
# package is not installed here; installed ones are also looked up in their metadata)
IMPORT_TO_DIST = {
    "yaml": {"pyyaml"},
    "sklearn": {"scikit-learn"},
    "prometheus_client": {"prometheus-client"},
    "opentelemetry": {"opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"},
    "google": {"protobuf"},
}
# declared base dependencies loopml uses without an import statement of its own
USED_WITHOUT_IMPORT = {
    "httptools": "serve/server.py configures uvicorn with http='httptools'",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module name -> the files of src/loopml that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "loopml" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _providers(module: str) -> set[str]:
    installed = importlib.metadata.packages_distributions().get(module, [])
    return {_norm(d) for d in installed} | IMPORT_TO_DIST.get(module, set()) | {_norm(module)}


def test_every_third_party_import_is_declared():
    project = _project()
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        declared |= {_requirement_name(r) for r in extra}
    imports = _imports()
    assert {"numpy", "mlflow", "sklearn"} <= set(imports)  # the scan sees imports at all
    missing = {m: sorted(files)[:3] for m, files in imports.items() if not _providers(m) & declared}
    assert not missing, f"imported by src/loopml but not declared in pyproject.toml: {missing}"


def test_every_base_dependency_is_used():
    imported: set[str] = set()
    for module in _imports():
        imported |= _providers(module)
    unused = [r for r in _project()["dependencies"]
              if _requirement_name(r) not in imported and _requirement_name(r) not in USED_WITHOUT_IMPORT]
    assert not unused, f"declared in [project].dependencies but never imported by src/loopml: {unused}"
