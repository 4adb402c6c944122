"""scikit-learn models (and loopml's torch wrapper, which has the same estimator surface).

The pipeline itself is ``model_``; :class:`~loopml.serve.runtime.ModelRuntime` splits it
into transform steps and final estimator, and uses the float-matrix fast lane and the
compiled linear path (``serve/compiled.py``) where they give identical answers.
"""

from __future__ import annotations

from loopml.serve.runtimes.base import ModelInfo, Runtime

NATIVE_FLAVORS = ("sklearn", "loopml_torch")


class SklearnRuntime(Runtime):
    runtime_name = "sklearn"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        return not info.known or any(f in info.flavors for f in NATIVE_FLAVORS)

    def load(self) -> "SklearnRuntime":
        # the registry refuses pickle files here unless opted in (fail closed)
        self.model_ = self.source.load_native(self.ref)
        return self
