"""``loopml deploy k8s``: write plain manifests, the chart and its values for a project.

The chart lives in the source tree (``deploy/helm/loopml``), beside ``src/``: this module finds
it from its own path, so it is there in a checkout or an editable install.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import yaml

from loopml.deploy.manifests import render
from loopml.deploy.values import check, default_values, load_values_file, merge
from loopml.errors import DeployError

CHART_DIR = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "loopml"


def chart_dir() -> Path:
    if not (CHART_DIR / "Chart.yaml").is_file():
        raise DeployError(f"the Helm chart is not at {CHART_DIR}; run loopml from a checkout or an editable "
                          "install (pip install -e .)")
    return CHART_DIR


def chart_version() -> str:
    return str(yaml.safe_load((chart_dir() / "Chart.yaml").read_text())["version"])


def project_values(project: Path, values_file: Path | None = None) -> dict:
    """Defaults from the project's loopml.yaml, then ``values_file`` over them, checked."""
    from loopml.spec import load_spec

    spec = load_spec(project)
    spec_file = project / "loopml.yaml" if project.is_dir() else project
    values = default_values(spec, spec_file.read_text())
    if values_file is not None:
        values = merge(values, load_values_file(values_file))
    return check(values)


def dump_all(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def write(values: dict, out: Path) -> dict[str, Path]:
    """``out/crds.yaml`` (the CustomResourceDefinitions: ``kubectl apply`` them first),
    ``out/manifests.yaml`` (every other object), ``out/values.yaml`` (for ``helm install -f``),
    ``out/chart/loopml`` (the chart, its values.yaml replaced by these) and the packaged
    ``out/loopml-VERSION.tgz``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission: the user's --out, not our bug
        raise DeployError(f"--out {out}: cannot create the folder ({exc.strerror}); pass a folder you can "
                          "write") from None
    from loopml.deploy.crds import crds

    crds_path = out / "crds.yaml"
    crds_path.write_text(dump_all(crds()))
    manifests = out / "manifests.yaml"
    manifests.write_text(dump_all(render(values)))
    values_path = out / "values.yaml"
    values_path.write_text(yaml.safe_dump(values, sort_keys=False))
    chart = out / "chart" / "loopml"
    if chart.exists():
        shutil.rmtree(chart)
    shutil.copytree(chart_dir(), chart, ignore=shutil.ignore_patterns("*.tgz", "__pycache__"))
    shutil.copyfile(values_path, chart / "values.yaml")
    package = out / f"loopml-{chart_version()}.tgz"
    with tarfile.open(package, "w:gz") as tar:  # the layout `helm package` writes: loopml/...
        tar.add(chart, arcname="loopml")
    return {"crds": crds_path, "manifests": manifests, "values": values_path, "chart": chart, "package": package}
