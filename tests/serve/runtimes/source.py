"""A model source that keeps each version's files in folders (MLmodel, run artifacts, tags),
with the registry methods the runtimes and ``optimize_version`` call; no MLflow server."""

from __future__ import annotations

import os
import shutil

import yaml

from loopml.registry.client import ModelVersionRef


class FolderSource:
    def __init__(self, root, model, signature, example=None, flavors=("sklearn", "python_function")):
        self.root = str(root)
        self.model, self.sig, self.example = model, signature, example
        self.tags: dict[str, str] = {}
        os.makedirs(os.path.join(self.root, "model"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "run"), exist_ok=True)
        with open(os.path.join(self.root, "model", "MLmodel"), "w") as f:
            yaml.safe_dump({"flavors": {k: {} for k in flavors}}, f)

    @property
    def ref(self) -> ModelVersionRef:
        return ModelVersionRef("m", "1", "run-1", "folder://m/1", [], dict(self.tags))

    def download(self, ref, dst, path=""):
        src = os.path.join(self.root, "model", path)
        out = os.path.join(dst, os.path.basename(src.rstrip("/")) or "model")
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, out)
        return out

    def download_run_artifacts(self, ref, path, dst):
        return shutil.copytree(os.path.join(self.root, "run", path), os.path.join(dst, path))

    def log_run_artifacts(self, ref, local_dir, path):
        shutil.copytree(local_dir, os.path.join(self.root, "run", path), dirs_exist_ok=True)

    def set_version_tags(self, ref, tags):
        self.tags.update(tags)

    def delete_version_tag(self, ref, key):
        self.tags.pop(key, None)

    def load_native(self, ref):
        return self.model

    def signature(self, ref):
        return self.sig

    def input_example(self, ref):
        return self.example

    def reference_profile(self, ref):
        raise LookupError("no profile")
