"""Text embeddings: a sentence-transformers model served from its own files, without
sentence-transformers.

Takes versions logged with MLflow's ``sentence_transformers`` flavor (their folder holds
``model.sentence_transformer/``: ``config.json`` + weights, ``tokenizer.json``,
``1_Pooling/config.json``, ``modules.json``). The encoder is loaded with ``transformers``'
``AutoModel`` and the text split with the ``tokenizers`` package (the ``text`` extra);
pooling is done here the way sentence-transformers documents it for mean pooling: the
token vectors averaged over the attention mask, then L2-normalised when ``modules.json``
lists a ``Normalize`` module. Other pooling modes are refused at load (the caller falls
back to the pyfunc runtime, which needs sentence-transformers itself).

The model takes one text per row (an OIP ``BYTES`` tensor of N strings, a list, or a
one-column frame) and answers a float32 ``[N, dim]`` matrix.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from loopml.serve.runtimes.base import ModelInfo, Runtime

FLAVOR = "sentence_transformers"
DATA_DIR = "model.sentence_transformer"  # where mlflow.sentence_transformers saves the model
DEFAULT_MAX_TOKENS = 256
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _read_json(folder: str, *parts: str) -> Any:
    path = os.path.join(folder, *parts)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _texts(X: Any) -> list[str]:
    """One string per row from what the serving path hands over (see the module doc)."""
    if isinstance(X, dict):
        if len(X) != 1:
            raise ValueError(f"expects one text input; got {sorted(X)}")
        X = next(iter(X.values()))
    if hasattr(X, "iloc"):  # a frame (first column) or a series
        X = X.iloc[:, 0] if getattr(X, "ndim", 1) == 2 else X
        X = X.to_numpy()
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"expects one text per row (shape [N]); got shape {list(arr.shape)}")
    out = []
    for v in arr:
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise ValueError(f"expects text (BYTES); got {type(v).__name__}")
        out.append(v)
    return out


def _pooling_mode(conf: dict) -> str:
    """The pooling of a ``1_Pooling/config.json``: ``pooling_mode`` (sentence-transformers 6) or
    the ``pooling_mode_*`` booleans (earlier), "+"-joined when several are on."""
    if conf.get("pooling_mode"):
        return str(conf["pooling_mode"])
    on = [k[len("pooling_mode_"):] for k, v in conf.items() if k.startswith("pooling_mode_") and v is True]
    return "mean" if on == ["mean_tokens"] else "+".join(on) or "none"


class TextEmbeddingModel:
    """Tokenizer + encoder + pooling with the estimator surface the serving path calls. The
    encoder is the ``transformers`` model, or an ONNX Runtime session of the same encoder with
    the pooling inside the graph (``session``; see :func:`export_onnx`)."""

    predict_datatype = "FP32"

    def __init__(self, tokenizer: Any, encoder: Any, normalize: bool, *, session: Any = None,
                 dim: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.normalize = normalize
        self.session = session
        self.dim = int(dim if dim is not None else encoder.config.hidden_size)
        self._feeds = [i.name for i in session.get_inputs()] if session is not None else []

    def with_session(self, session: Any) -> "TextEmbeddingModel":
        """The same tokenizer and pooling with the encoder's ONNX graph instead of torch."""
        return TextEmbeddingModel(self.tokenizer, None, self.normalize, session=session, dim=self.dim)

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}

    def predict(self, X: Any) -> np.ndarray:
        texts = _texts(X)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        feeds = self.encode(texts)
        if self.session is not None:
            return np.asarray(self.session.run(None, {k: feeds[k] for k in self._feeds})[0], dtype=np.float32)
        import torch

        with torch.inference_mode():
            pooled = _pool(self.encoder, *(torch.from_numpy(feeds[k]) for k in ONNX_INPUTS), normalize=self.normalize)
        return pooled.float().numpy()

    def predict_outputs(self, X: Any) -> tuple[np.ndarray, None]:
        return self.predict(X), None


def _pool(encoder: Any, ids: Any, mask: Any, types: Any, normalize: bool) -> Any:
    import torch

    hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    # padding tokens carry vectors too: only the real tokens are averaged
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


def export_onnx(model: TextEmbeddingModel, opset: int = 17) -> Any:
    """The encoder with its pooling (and normalisation) as one ONNX graph: int64
    ``input_ids`` / ``attention_mask`` / ``token_type_ids`` [n, seq] in, ``embedding`` [n, dim]
    out; batch and sequence length dynamic (TorchScript-based exporter, as for PyTorch models)."""
    import io

    import onnx
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.encoder

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return _pool(self.encoder, ids, mask, types, model.normalize)

    feeds = model.encode(["a short text", "a somewhat longer text, so that the batch is padded"])
    f = io.BytesIO()
    axes = {name: {0: "n", 1: "seq"} for name in ONNX_INPUTS}
    torch.onnx.export(Pooled().eval(), tuple(torch.from_numpy(feeds[k]) for k in ONNX_INPUTS), f, dynamo=False,
                      input_names=list(ONNX_INPUTS), output_names=["embedding"],
                      dynamic_axes={**axes, "embedding": {0: "n"}}, opset_version=opset)
    return onnx.load_from_string(f.getvalue())


def probe_texts(example: Any, n: int = 48, seed: int = 0) -> list[str]:
    """Texts for the ONNX parity check: the input example, then texts of 1 to ~400 words made
    from its words (past the token limit: truncation is compared too)."""
    try:
        seen = _texts(example) if example is not None else []
    except ValueError:
        seen = []
    words = " ".join(seen).split() or "the quick brown fox jumps over the lazy dog".split()
    rng = np.random.default_rng(seed)
    lengths = np.geomspace(1, 400, num=max(n - len(seen), 1)).round().astype(int)
    return [*seen, *(" ".join(rng.choice(words, int(k))) for k in lengths)]


def load_text_embedding(folder: str, session: Any = None) -> TextEmbeddingModel:
    """Load a sentence-transformers model folder (no network: local files only); with an ONNX
    ``session`` of its encoder (see :func:`export_onnx`) torch is not loaded at all."""
    from tokenizers import Tokenizer

    modules = _read_json(folder, "modules.json") or []
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    allowed = {"Transformer", "Pooling", "Normalize"}
    if modules and not set(kinds) <= allowed:
        raise ValueError(f"modules {sorted(set(kinds) - allowed)} are not supported (only {sorted(allowed)})")
    pooling_dir = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")), "1_Pooling")
    pooling = _read_json(folder, pooling_dir, "config.json") or {"pooling_mode": "mean"}
    if _pooling_mode(pooling) != "mean":
        raise ValueError(f"only mean pooling is supported; the model's pooling is {_pooling_mode(pooling)!r}")
    # sentence-transformers < 6 keeps the limit in sentence_bert_config.json, 6 in the tokenizer's config
    max_tokens = int((_read_json(folder, "sentence_bert_config.json") or {}).get("max_seq_length")
                     or (_read_json(folder, "tokenizer_config.json") or {}).get("model_max_length")
                     or DEFAULT_MAX_TOKENS)

    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding()  # to the longest text of the batch, as sentence-transformers pads
    normalize = "Normalize" in kinds
    if session is not None:
        dim = int((_read_json(folder, "config.json") or {}).get("hidden_size") or session.get_outputs()[0].shape[-1])
        return TextEmbeddingModel(tokenizer, None, normalize, session=session, dim=dim)
    from transformers import AutoModel

    from loopml.serve.runtimes.torch_runtime import serving_threads

    serving_threads()
    encoder = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return TextEmbeddingModel(tokenizer, encoder, normalize)


class TextEmbeddingRuntime(Runtime):
    runtime_name = "text_embedding"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        return info.known and FLAVOR in info.flavors

    def load(self) -> "TextEmbeddingRuntime":
        # the model is read into memory, so the downloaded files need not outlive loading
        with tempfile.TemporaryDirectory(prefix="loopml-text-") as tmp:
            local = self.source.download(self.ref, tmp)
            folder = os.path.join(local, DATA_DIR)
            self.model_ = load_text_embedding(folder if os.path.isdir(folder) else local)
        return self


class TextEmbeddingOnnxRuntime(Runtime):
    """A text-embedding version adopted for ONNX (``loopml optimize``): the tokenizer and
    pooling settings from its own files, the encoder from ``onnx/model.onnx`` in its run. When
    the session cannot be built the runtime chain falls back to :class:`TextEmbeddingRuntime`."""

    runtime_name = "text_embedding_onnx"

    @classmethod
    def takes(cls, info: ModelInfo) -> bool:
        return info.known and FLAVOR in info.flavors and info.wants_onnx

    def load(self) -> "TextEmbeddingOnnxRuntime":
        from loopml.serve.runtimes.base import ONNX_ARTIFACT_PATH, ONNX_FILE
        from loopml.serve.runtimes.onnx_runtime import open_session

        with tempfile.TemporaryDirectory(prefix="loopml-text-") as tmp:
            local = self.source.download(self.ref, os.path.join(tmp, "model"))
            folder = os.path.join(local, DATA_DIR)
            graph = self.source.download_run_artifacts(self.ref, ONNX_ARTIFACT_PATH, os.path.join(tmp, "onnx"))
            session = open_session(os.path.join(graph, ONNX_FILE))
            self.model_ = load_text_embedding(folder if os.path.isdir(folder) else local, session=session)
        return self
