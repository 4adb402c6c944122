"""Generated card transactions with a fraud label, in two periods.

Period 2 drifts in its inputs (larger amounts, more online and foreign transactions,
a new merchant category) and in the input-label relation (fraud moves from far-from-home
card-present spending to fast bursts of online spending), so a model trained on period 1
degrades on period 2 and a retrained model beats it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES_P1 = ["grocery", "fuel", "restaurant", "online", "travel", "electronics"]
CATEGORIES_P2 = CATEGORIES_P1 + ["crypto"]
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_transactions(n: int, period: int = 1, seed: int = 0, start: str = "2026-01-01") -> pd.DataFrame:
    """``n`` transactions of ``period`` 1 (reference) or 2 (drifted), reproducible by ``seed``."""
    rng = np.random.default_rng(seed + 1000 * period)
    drifted = period >= 2
    cats = CATEGORIES_P2 if drifted else CATEGORIES_P1
    cat_p = np.array([0.25, 0.15, 0.2, 0.2, 0.1, 0.1]) if not drifted else np.array([0.12, 0.08, 0.12, 0.38, 0.1, 0.1, 0.1])
    category = rng.choice(cats, size=n, p=cat_p / cat_p.sum())
    country_p = np.array([0.55, 0.12, 0.1, 0.1, 0.07, 0.06]) if not drifted else np.array([0.35, 0.12, 0.1, 0.1, 0.18, 0.15])
    country = rng.choice(COUNTRIES, size=n, p=country_p)
    amount = rng.lognormal(mean=3.6 if not drifted else 4.1, sigma=1.0, size=n).round(2)
    hour = rng.integers(0, 24, size=n)
    card_present = rng.random(n) < (0.6 if not drifted else 0.35)
    distance_km = rng.exponential(15 if not drifted else 40, size=n).round(1)
    tx_24h = rng.poisson(3 if not drifted else 5, size=n)
    account_age_days = rng.integers(1, 3650, size=n)
    night = ((hour < 6) | (hour > 22)).astype(float)
    if not drifted:
        logit = (-7.9 + 1.3 * np.log1p(distance_km) + 1.5 * night + 1.0 * (category == "travel")
                 - 0.0005 * account_age_days + 0.35 * np.log1p(amount))
    else:
        logit = (-6.3 + 0.45 * tx_24h + 1.6 * (~card_present) * (category == "online")
                 + 2.0 * (category == "crypto") - 0.6 * night + 0.3 * np.log1p(amount)
                 - 0.3 * np.log1p(distance_km))
    fraud = (rng.random(n) < _sigmoid(logit)).astype(int)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 30 * 86400, size=n)), unit="s")
    if drifted:
        ts = ts + pd.Timedelta(days=30)
    return pd.DataFrame({
        "transaction_id": [f"p{period}-{seed}-{i:07d}" for i in range(n)],
        "event_time": ts,
        "amount": amount,
        "hour": hour.astype("int64"),
        "merchant_category": category,
        "country": country,
        "card_present": card_present.astype("int64"),
        "distance_km": distance_km,
        "tx_24h": tx_24h.astype("int64"),
        "account_age_days": account_age_days.astype("int64"),
        "is_fraud": fraud,
    })
