"""The PyTorch training loop on preprocessed float32 arrays: epochs of shuffled mini-batches,
validation loss, early stopping, and a resumable state. The same code runs in-process and in
each Ray Train worker (where ``rank``/``world`` shard every epoch's permutation and the module
is DDP-wrapped, so all ranks take the same number of steps and stay in step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class LoopConfig:
    task: str
    loss: str = "auto"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 64
    patience: int | None = 5  # None: no early stopping
    min_delta: float = 0.0
    seed: int = 42

    @classmethod
    def from_spec(cls, spec: Any, overrides: dict[str, Any] | None = None) -> "LoopConfig":
        m, es = spec.model, spec.model.early_stopping
        values = dict(task=spec.task, loss=m.loss, optimizer=m.optimizer, lr=m.lr, weight_decay=m.weight_decay,
                      epochs=m.epochs, batch_size=m.batch_size, patience=es.patience if es else None,
                      min_delta=es.min_delta if es else 0.0, seed=spec.data.split.seed)
        values.update(overrides or {})
        return cls(**values)


@dataclass
class LoopState:
    """Everything needed to resume: a checkpoint is this, saved with ``torch.save``."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_state: dict[str, Any] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None
    module_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoopState":
        return cls(**d)


def make_loss(cfg: LoopConfig) -> nn.Module:
    name = cfg.loss if cfg.loss != "auto" else ("cross_entropy" if cfg.task == "classification" else "mse")
    return {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss, "huber": nn.HuberLoss}[name]()


def make_optimizer(cfg: LoopConfig, params: Any) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return kinds[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _target(y: np.ndarray, task: str) -> torch.Tensor:
    return torch.from_numpy(y).long() if task == "classification" else torch.from_numpy(y).float().reshape(-1, 1)


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP keeps the user's module in .module


def run_epochs(module: nn.Module, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None,
               cfg: LoopConfig, *, state: LoopState | None = None, rank: int = 0, world: int = 1,
               on_epoch: Callable[[LoopState, dict[str, float]], None] | None = None,
               on_batch: Callable[[int, int], None] | None = None) -> LoopState:
    """Train from ``state`` (a resumed checkpoint) or from scratch until ``cfg.epochs`` or early
    stopping; ``on_epoch(state, metrics)`` after each epoch (checkpoint, log), ``on_batch(epoch,
    batch)`` before each step (progress). Returns the final state; ``best_state`` holds the
    weights with the lowest validation loss (the last weights without a validation split)."""
    state = state or LoopState()
    loss_fn = make_loss(cfg)
    opt = make_optimizer(cfg, module.parameters())
    if state.module_state is not None:
        unwrap(module).load_state_dict(state.module_state)
    if state.optimizer_state is not None:
        opt.load_state_dict(state.optimizer_state)
    Xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), _target(y, cfg.task)
    per_rank = len(Xt) // world  # equal shards: every rank takes the same number of steps
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch
        order = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(len(Xt)))
        mine = order[rank * per_rank:(rank + 1) * per_rank]
        module.train()
        total, seen = 0.0, 0
        for b, start in enumerate(range(0, len(mine), cfg.batch_size)):
            if on_batch is not None:
                on_batch(epoch, b)
            idx = mine[start:start + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(module(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        metrics = {"train_loss": total / max(seen, 1)}
        weights = unwrap(module).state_dict()
        if X_val is not None and len(X_val):
            metrics["val_loss"] = evaluate_loss(unwrap(module), X_val, y_val, cfg)
            if metrics["val_loss"] < state.best_val - cfg.min_delta:
                state.best_val, state.bad_epochs = metrics["val_loss"], 0
                state.best_state = {k: v.detach().clone() for k, v in weights.items()}
            else:
                state.bad_epochs += 1
                state.stopped_early = cfg.patience is not None and state.bad_epochs >= cfg.patience
        else:
            state.best_state = {k: v.detach().clone() for k, v in weights.items()}
        state.epoch = epoch + 1
        state.history.append({"epoch": float(epoch), **metrics})
        state.module_state = {k: v.detach().clone() for k, v in weights.items()}
        state.optimizer_state = opt.state_dict()
        if on_epoch is not None:
            on_epoch(state, metrics)
    return state


def evaluate_loss(module: nn.Module, X: np.ndarray, y: np.ndarray, cfg: LoopConfig) -> float:
    module.eval()
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
        return float(make_loss(cfg)(out, _target(y, cfg.task)))
