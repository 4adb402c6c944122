"""``loopml deploy k8s``: Kubernetes manifests and the Helm chart for a project (issue #13)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Deploy the project's server and controller (Kubernetes manifests, Helm chart).",
                  no_args_is_help=True)


@app.command("k8s")
def k8s(
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder holding loopml.yaml.")] = Path("."),
    out: Annotated[Path, typer.Option("--out", help="Folder for manifests.yaml, values.yaml, the chart and "
                                                    "its package.")] = Path("k8s"),
    values: Annotated[Optional[Path], typer.Option("--values", help="YAML values over the defaults (the "
                                                                    "chart's values.yaml shape).")] = None,
) -> None:
    """Render plain manifests (no Helm needed) and copy and package the Helm chart."""
    from loopml.deploy.chart import write, project_values
    from loopml.deploy.manifests import render

    vals = project_values(project, values)
    paths = write(vals, out)
    kinds = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in render(vals))
    typer.echo(f"wrote {paths['manifests']}: {kinds}")
    typer.echo(f"chart: {paths['chart']} (package {paths['package']}); the pods read the Secret "
               f"'{vals['secrets']['existingSecret']}': create it before installing")
