"""loopml's default network for tabular data: a multi-layer perceptron.

Any ``model.module`` follows the same construction contract:
``Class(in_features, out_features, **model.params)`` returning an ``nn.Module`` that maps a
(batch, in_features) float32 tensor to (batch, out_features) logits (classes) or values.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class TabularMLP(nn.Module):
    """Linear -> activation -> dropout, per ``hidden`` width, then a linear output layer."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (64, 32),
                 dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        if isinstance(hidden, int):
            hidden = [hidden]
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"The 'hidden' parameter of TabularMLP must be a list of ints >= 1. Got {hidden!r} instead.")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"The 'dropout' parameter of TabularMLP must be a float in [0, 1). Got {dropout!r} instead.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' parameter of TabularMLP must be one of {sorted(ACTIVATIONS)}. "
                             f"Got {activation!r} instead.")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
