"""A small tabular project for the trainers: two informative numbers, a category, a label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


def tabular_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    score = 2 * a - b + (color == "red") * 1.5
    return pd.DataFrame({"a": a, "b": b, "color": color, "label": (score > 0.3).astype(int),
                         "value": score * 10 + 100 + rng.normal(scale=0.5, size=n)})


def write_project(folder: Path, model: dict, task: str = "classification", extra: dict | None = None,
                  n: int = 600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tabular_frame(n).to_csv(folder / "data.csv", index=False)
    target = "label" if task == "classification" else "value"
    other = "value" if task == "classification" else "label"
    spec = {"name": "tab", "task": task, "model": model,
            "data": {"source": "data.csv", "target": target, "features": ["a", "b", "color"]},
            **(extra or {})}
    spec["data"].setdefault("split", {"test_size": 0.25, "seed": 1})
    assert other not in spec["data"]["features"]
    (folder / "loopml.yaml").write_text(yaml.safe_dump(spec))
    return folder


@pytest.fixture
def torch_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"kind": "torch", "params": {"hidden": [16]}, "epochs": 15,
                                             "batch_size": 32, "lr": 0.01})
