"""The example project that ``loopml new`` scaffolds and ``loopml demo`` runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from loopml.demo.data import COUNTRIES, generate_transactions

SPEC_TEMPLATE = {
    "name": "fraud",
    "task": "classification",
    "data": {
        "source": "data/transactions.csv",
        "target": "is_fraud",
        "id_column": "transaction_id",
        "timestamp": "event_time",
        "split": {"test_size": 0.25, "seed": 7, "by": "random"},
    },
    "contract": {
        "columns": {
            "transaction_id": {"dtype": "string", "nullable": False},
            "amount": {"dtype": "float", "nullable": False, "min": 0},
            "hour": {"dtype": "int", "nullable": False, "min": 0, "max": 23},
            "merchant_category": {"dtype": "string", "nullable": False},
            "country": {"dtype": "string", "allowed": COUNTRIES},
            "card_present": {"dtype": "int", "allowed": [0, 1]},
            "distance_km": {"dtype": "float", "min": 0},
            "tx_24h": {"dtype": "int", "min": 0},
            "account_age_days": {"dtype": "int", "min": 0},
            "is_fraud": {"dtype": "int", "nullable": False, "allowed": [0, 1]},
        },
        "min_rows": 500,
        "unique": ["transaction_id"],
    },
    "model": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 150, "learning_rate": 0.06, "max_depth": 5},
    },
    "evaluation": {
        "primary_metric": "roc_auc",
        "margin": 0.01,
        "guards": {"log_loss": 0.02},
        "minimum": {"roc_auc": 0.65},
        "slices": ["merchant_category"],
    },
    "serving": {"port": 8080, "max_batch_size": 64, "max_delay_ms": 1},
    "monitoring": {"window": 2000, "psi_threshold": 0.2, "fdr": 0.05},
    "retrain": {"source": "data/transactions_recent.csv"},
    "rollout": {
        "steps": [{"kind": "shadow", "min_requests": 200}, {"kind": "canary", "weight": 0.05, "min_requests": 50},
                  {"kind": "canary", "weight": 0.25}, {"kind": "canary", "weight": 0.5}],
        "min_requests": 100,
        "max_error_rate_increase": 0.01,
        "max_p99_ratio": 2.0,
        "p99_slack_ms": 20,
        "latency_budget_ms": 50,
    },
    "triggers": {"on_drift": True, "drift_check_interval_s": 5, "drift_min_rows": 500, "debounce_s": 60},
}


def write_spec(folder: Path, spec: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loopml.yaml"
    path.write_text("# loopml project spec: see docs/user-guide.md\n" + yaml.safe_dump(spec or SPEC_TEMPLATE, sort_keys=False))
    return path


def scaffold_project(folder: Path, rows: int = 5000, seed: int = 0) -> Path:
    """A working project: loopml.yaml plus generated period-1 data (and period-2 data for drift)."""
    from loopml.errors import LoopmlError

    if (folder / "loopml.yaml").exists():
        raise LoopmlError(f"{folder / 'loopml.yaml'} already exists; pick another folder")
    write_spec(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    generate_transactions(rows, period=1, seed=seed).to_csv(data / "transactions.csv", index=False)
    generate_transactions(rows, period=2, seed=seed).to_csv(data / "transactions_recent.csv", index=False)
    return folder
