"""Model runtimes, one module per kind, behind the contract in :mod:`.base`.

Order is preference: an ONNX session when the version was adopted for ONNX (or is an ONNX
model), then PyTorch (loopml's torch models and ``mlflow.pytorch``), XGBoost and LightGBM
(``mlflow.xgboost`` / ``mlflow.lightgbm``), then scikit-learn (also
loopml's torch models through ``load_native``, as the fallback), then text embeddings
(``sentence_transformers``, :mod:`.text_embedding`: its ONNX encoder when adopted, else torch), then MLflow pyfunc as the
fallback for any other flavor.
"""

from loopml.serve.runtimes.boost_runtime import BoostRuntime
from loopml.serve.runtimes.base import ModelInfo, Runtime, model_info, register_runtime, runtimes_for
from loopml.serve.runtimes.onnx_runtime import OnnxRuntime
from loopml.serve.runtimes.pyfunc_runtime import PyfuncRuntime
from loopml.serve.runtimes.sklearn_runtime import SklearnRuntime
from loopml.serve.runtimes.text_embedding import TextEmbeddingOnnxRuntime, TextEmbeddingRuntime
from loopml.serve.runtimes.torch_runtime import TorchRuntime

register_runtime(OnnxRuntime)
register_runtime(TorchRuntime)
register_runtime(BoostRuntime)
register_runtime(SklearnRuntime)
register_runtime(TextEmbeddingOnnxRuntime)  # an adopted ONNX encoder, falling back to:
register_runtime(TextEmbeddingRuntime)  # sentence_transformers: before pyfunc, which would need the library
register_runtime(PyfuncRuntime)

__all__ = ["BoostRuntime", "ModelInfo", "OnnxRuntime", "PyfuncRuntime", "Runtime", "SklearnRuntime", "TextEmbeddingOnnxRuntime", "TextEmbeddingRuntime", "TorchRuntime", "model_info",
           "register_runtime", "runtimes_for"]
