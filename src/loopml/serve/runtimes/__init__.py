"""Model runtimes, one module per kind, behind the contract in :mod:`.base`.

Order is preference: an ONNX session when the version was adopted for ONNX (or is an ONNX
model), then scikit-learn (also loopml's own torch models, through ``load_native``), then
MLflow pyfunc as the fallback for any other flavor.
"""

from loopml.serve.runtimes.base import ModelInfo, Runtime, model_info, register_runtime, runtimes_for
from loopml.serve.runtimes.onnx_runtime import OnnxRuntime
from loopml.serve.runtimes.pyfunc_runtime import PyfuncRuntime
from loopml.serve.runtimes.sklearn_runtime import SklearnRuntime

register_runtime(OnnxRuntime)
register_runtime(SklearnRuntime)
register_runtime(PyfuncRuntime)

__all__ = ["ModelInfo", "OnnxRuntime", "PyfuncRuntime", "Runtime", "SklearnRuntime", "model_info",
           "register_runtime", "runtimes_for"]
