"""Endpoints and their deployments.

A :class:`Deployment` is one loaded model version behind its own batcher, composed
explicitly: ``Batcher(RecordingPredictor(ModelRuntime))``. It counts its in-flight
requests so that, after a hot swap, it can be retired once they have all finished.

An :class:`Endpoint` is what clients address by model name: a primary deployment,
an optional challenger, and the traffic policy choosing between them.
"""

from __future__ import annotations

import asyncio
import time

from loopml.errors import ModelNotReady
from loopml.serve.batching import Batcher
from loopml.serve.recorder import PredictionRecorder, RecordingPredictor
from loopml.serve.runtime import ModelRuntime, Prediction, Rows
from loopml.serve.settings import EndpointSpec, ServeSettings
from loopml.serve.traffic import CHALLENGER, PRIMARY, TrafficPolicy


class Deployment:
    """One model version serving requests for one role (primary or challenger)."""

    def __init__(self, runtime: ModelRuntime, settings: ServeSettings, *, label: str,
                 recorder: PredictionRecorder | None = None, on_batch=None) -> None:
        self.runtime = runtime
        self.recording = RecordingPredictor(runtime, recorder, model=runtime.name, version=runtime.version,
                                            inputs=runtime.inputs, label=label)
        self.batcher = Batcher(self.recording, max_batch_size=settings.max_batch_size,
                               max_delay_ms=settings.max_delay_ms, max_queue_rows=settings.max_queue_rows,
                               name=runtime.name,
                               on_batch=(lambda n: on_batch(runtime.name, runtime.version, n)) if on_batch else None)
        self.inflight = 0
        self.retired = False
        # where it predicts (serve/fleet.py decides): the warm-up batch it was timed on, and why
        self.batch_rows: int | None = None
        self.batch_seconds: float | None = None
        self.placement_reason = ""

    @property
    def in_thread(self) -> bool:
        """Whether its batches predict in a thread (else inline, on the event loop)."""
        return bool(self.runtime.predict_in_thread)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> str:
        return self.runtime.version

    @property
    def label(self) -> str:
        return self.recording.label

    @label.setter
    def label(self, value: str) -> None:
        self.recording.label = value

    async def predict(self, rows: Rows, deadline: float | None = None, gone=None) -> Prediction:
        self.inflight += 1
        try:
            mark = self.recording.log_mark()  # acknowledged prediction log: answer once logged
            pred = await self.batcher.predict(rows, deadline, gone)
            if mark is not None:
                await self.recording.durable(mark)
            return pred
        finally:
            self.inflight -= 1

    async def retire(self, timeout: float = 30.0) -> None:
        """Wait for in-flight requests (bounded), then stop the batcher and release the model."""
        self.retired = True
        end = time.monotonic() + timeout
        while self.inflight and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await self.batcher.close(max(0.0, end - time.monotonic()))
        await asyncio.to_thread(self.runtime.close)


class Endpoint:
    """A served model name: primary + optional challenger + traffic policy."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.primary: Deployment | None = None
        self.challenger: Deployment | None = None
        self.policy = TrafficPolicy()
        self.lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def primary_label(self) -> str:
        return f"v{self.spec.ref}" if self.spec.ref.isdigit() else self.spec.ref

    @property
    def challenger_label(self) -> str:
        return "shadow" if self.policy.shadow else CHALLENGER

    @property
    def ready(self) -> bool:
        return self.primary is not None

    def deployments(self) -> list[Deployment]:
        return [d for d in (self.primary, self.challenger) if d is not None]

    def by_version(self, version: str) -> Deployment | None:
        for d in self.deployments():
            if d.version == version:
                return d
        return None

    def route(self, headers: dict[str, str], first_row: dict | None) -> tuple[Deployment, Deployment | None]:
        """The deployment that answers, and the one to shadow to (or None)."""
        primary = self.primary
        if primary is None:
            raise ModelNotReady(self.name)
        challenger = self.challenger
        policy = self.policy
        if challenger is None or policy.kind == "single":
            return primary, None
        if policy.shadow:
            return primary, challenger
        return (challenger if policy.choose(headers, first_row) == CHALLENGER else primary), None

    def describe(self) -> dict:
        def dep(d: Deployment | None):
            if d is None:
                return None
            return {"version": d.version, "variant": d.label, "inflight": d.inflight,
                    "queued_rows": d.batcher.queued_rows, "load_seconds": d.runtime.load_seconds,
                    "predicts_in": "thread" if d.in_thread else "event loop", "placement": d.placement_reason,
                    "batch_rows": d.batch_rows,
                    "batch_predict_us": None if d.batch_seconds is None else round(d.batch_seconds * 1e6, 1)}

        return {"name": self.name, "ref": self.spec.ref, "ready": self.ready, "policy": self.policy.to_dict(),
                PRIMARY: dep(self.primary), CHALLENGER: dep(self.challenger), "last_error": self.last_error}
