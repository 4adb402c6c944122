"""The operator's real promotion and registration, through loopml's registry (#10's path).

A TrainingJob's pods run ``loopml train``, which registers the new version under the
``challenger`` alias; when the job finishes, :meth:`RegistryHooks.register_model` reads the
project's model name from the job's ConfigMap and points the job's ``registerAs`` alias at
that version (a no-op for the default ``challenger``). A ModelDeployment whose rollout passed
every step promotes its challenger with :meth:`RegistryHooks.promote`, as the controller
does at the end of a rollout (audited alias change).
"""

from __future__ import annotations

from typing import Any

import yaml


class RegistryHooks:
    """``RegistryHooks(workspace, kube)``; the constructor does no I/O."""

    def __init__(self, workspace: Any, kube: Any) -> None:
        self.workspace = workspace
        self.kube = kube

    def _registry(self):
        from loopml.registry.client import Registry

        return Registry(self.workspace)

    def model_name(self, body: dict) -> str:
        project = body["spec"]["project"]
        cm = self.kube.get("ConfigMap", body["metadata"]["namespace"], project["configMap"])
        if cm is None:
            raise LookupError(f"ConfigMap {project['configMap']} of TrainingJob {body['metadata']['name']} is gone")
        text = (cm.get("data") or {}).get(project.get("key", "loopml.yaml"), "")
        name = (yaml.safe_load(text) or {}).get("name")
        if not name:
            raise LookupError(f"no 'name' in key {project.get('key', 'loopml.yaml')} of ConfigMap {project['configMap']}")
        return str(name)

    def register_model(self, body: dict) -> str:
        name = self.model_name(body)
        reg = self._registry()
        version = reg.resolve(name, "challenger").version
        alias = body["spec"].get("registerAs") or "challenger"
        if alias != "challenger":
            reg.ensure_alias(name, alias, version,
                             why=f"TrainingJob {body['metadata']['namespace']}/{body['metadata']['name']} finished")
        return str(version)

    def promote(self, model: str, ref: str) -> None:
        reg = self._registry()
        version = reg.resolve(model, ref).version
        # as the controller promotes: ensure_alias loads the version and checks it before moving
        # the alias, and (unlike a promotion by hand) lifts no rollback block
        reg.ensure_alias(model, "champion", version, why=f"ModelDeployment rollout of {ref}: every step passed")
