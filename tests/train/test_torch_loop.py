"""The torch training loop without Ray: learning, early stopping, resuming from a checkpoint."""

from __future__ import annotations

import io

import numpy as np
import torch

from loopml.train.mlp import TabularMLP
from loopml.train.torch_loop import LoopConfig, LoopState, run_epochs


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    return X, y


def test_loop_learns_a_separable_problem():
    X, y = _data()
    torch.manual_seed(0)
    net = TabularMLP(3, 2, hidden=[8])
    state = run_epochs(net, X[:300], y[:300], X[300:], y[300:], LoopConfig("classification", lr=0.05, epochs=15,
                                                                            batch_size=32, patience=None))
    net.load_state_dict(state.best_state)
    with torch.no_grad():
        acc = (net(torch.from_numpy(X[300:])).argmax(1).numpy() == y[300:]).mean()
    assert acc > 0.9
    assert state.epoch == 15 and len(state.history) == 15
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_early_stopping_keeps_the_best_epoch_weights():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    y = rng.integers(0, 2, 300)  # noise: the validation loss soon stops improving
    torch.manual_seed(0)
    net = TabularMLP(3, 2, hidden=[64])
    cfg = LoopConfig("classification", lr=0.05, epochs=200, batch_size=16, patience=3)
    state = run_epochs(net, X[:200], y[:200], X[200:], y[200:], cfg)
    assert state.stopped_early and state.epoch < 200
    vals = [h["val_loss"] for h in state.history]
    assert state.best_val == min(vals)
    assert all(v >= state.best_val for v in vals[-cfg.patience:])  # no improvement in the last `patience`
    best_epoch = vals.index(min(vals))
    assert best_epoch == state.epoch - 1 - state.bad_epochs


def _checkpoint_roundtrip(state: LoopState) -> LoopState:
    buf = io.BytesIO()
    torch.save(state.to_dict(), buf)
    buf.seek(0)
    return LoopState.from_dict(torch.load(buf, weights_only=True))  # a checkpoint is never a pickle


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run():
    X, y = _data()
    cfg = LoopConfig("classification", lr=0.01, epochs=4, batch_size=32, patience=None)
    torch.manual_seed(0)
    straight = run_epochs(TabularMLP(3, 2, hidden=[8]), X, y, None, None, cfg)

    torch.manual_seed(0)
    half = run_epochs(TabularMLP(3, 2, hidden=[8]), X, y, None, None, LoopConfig(**{**cfg.__dict__, "epochs": 2}))
    resumed = run_epochs(TabularMLP(3, 2, hidden=[8]), X, y, None, None, cfg, state=_checkpoint_roundtrip(half))
    assert resumed.epoch == 4 and [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for k, v in straight.module_state.items():
        assert torch.equal(v, resumed.module_state[k]), k


def test_shards_give_every_rank_the_same_number_of_steps():
    X, y = _data(n=101)
    steps = {}
    for rank in (0, 1):
        seen = []
        run_epochs(TabularMLP(3, 2), X, y, None, None, LoopConfig("classification", epochs=1, batch_size=8,
                                                                   patience=None),
                   rank=rank, world=2, on_batch=lambda e, b: seen.append(b))
        steps[rank] = len(seen)
    assert steps[0] == steps[1] == 7  # 50 rows each in batches of 8


def test_regression_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)).astype(np.float32)
    y = (X[:, 0] * 2).astype(np.float32)
    torch.manual_seed(0)
    net = TabularMLP(2, 1, hidden=[8])
    state = run_epochs(net, X, y, None, None, LoopConfig("regression", lr=0.02, epochs=30, batch_size=32,
                                                         patience=None))
    assert state.history[-1]["train_loss"] < 0.1 * state.history[0]["train_loss"]
