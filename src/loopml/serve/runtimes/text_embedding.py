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
    """Tokenizer + encoder + pooling with the estimator surface the serving path calls."""

    predict_datatype = "FP32"

    def __init__(self, tokenizer: Any, encoder: Any, normalize: bool) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.normalize = normalize
        self.dim = int(encoder.config.hidden_size)

    def predict(self, X: Any) -> np.ndarray:
        import torch

        texts = _texts(X)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in enc], dtype=torch.long)
        with torch.inference_mode():
            hidden = self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            # padding tokens carry vectors too: only the real tokens are averaged
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().numpy()


def load_text_embedding(folder: str) -> TextEmbeddingModel:
    """Load a sentence-transformers model folder (no network: local files only)."""
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from loopml.serve.runtimes.torch_runtime import serving_threads

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
    serving_threads()
    encoder = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return TextEmbeddingModel(tokenizer, encoder, normalize="Normalize" in kinds)


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
