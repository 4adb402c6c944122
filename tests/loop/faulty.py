"""Fault injection for rollout tests: a real estimator that misbehaves on purpose.

It trains and predicts like any scikit-learn classifier, so it passes the offline gate; only
in a process where ``LOOPML_TEST_FAULT=1`` (the server the test starts) does it raise on
every prediction (``fault="errors"``), sleep before answering (``fault="slow"``), or answer
its first ``healthy_calls`` predict calls and raise on every later one
(``fault="errors_after"``: a model that passes the server's load-time smoke check and then
breaks on live traffic).
"""

from __future__ import annotations

import os
import time

from sklearn.base import BaseEstimator, ClassifierMixin


class FaultyClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, fault: str = "errors", delay_ms: float = 300.0, max_iter: int = 100,
                 healthy_calls: int = 8) -> None:
        self.fault = fault
        self.delay_ms = delay_ms
        self.max_iter = max_iter
        self.healthy_calls = healthy_calls

    def fit(self, X, y):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.inner_ = HistGradientBoostingClassifier(max_iter=self.max_iter, random_state=0).fit(X, y)
        self.classes_ = self.inner_.classes_
        return self

    def _misbehave(self) -> None:
        if os.environ.get("LOOPML_TEST_FAULT") != "1":
            return
        if self.fault == "errors":
            raise RuntimeError("injected failure")
        if self.fault == "errors_after":
            calls = self.__dict__.get("_calls", 0) + 1  # per process: not a fitted attribute
            self.__dict__["_calls"] = calls
            if calls > self.healthy_calls:
                raise RuntimeError("injected failure on live traffic")
            return
        time.sleep(self.delay_ms / 1000.0)

    def predict_proba(self, X):
        self._misbehave()
        return self.inner_.predict_proba(X)

    def predict(self, X):
        self._misbehave()
        return self.inner_.predict(X)
