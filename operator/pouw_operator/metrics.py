"""The operator's Prometheus metrics, served on :8080."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

KINDS = ("PoUWNode", "MLTask", "Stake")
RESULTS = ("ok", "retry", "error")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconcile_total = Counter(
            "pouw_operator_reconcile_total",
            "Reconciliations by kind and result (ok, retry, error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "pouw_operator_reconcile_seconds",
            "Time spent in one reconciliation.",
            ["kind"],
            registry=self.registry,
        )
        self.resources = Gauge(
            "pouw_operator_resources",
            "Custom resources the operator holds, by kind and phase.",
            ["kind", "phase"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        # Every series exists from the start, so rate() and increase() see the first error.
        for kind in KINDS:
            for result in RESULTS:
                self.reconcile_total.labels(kind, result)

    def set_phase(self, kind: str, uid: str, phase: str) -> None:
        """Record the phase of one resource (by uid) for pouw_operator_resources."""
        previous = self._phases.get((kind, uid))
        if previous == phase:
            return
        if previous is not None:
            self.resources.labels(kind, previous).dec()
        self._phases[(kind, uid)] = phase
        self.resources.labels(kind, phase).inc()

    def forget(self, kind: str, uid: str) -> None:
        previous = self._phases.pop((kind, uid), None)
        if previous is not None:
            self.resources.labels(kind, previous).dec()

    @contextmanager
    def observe(self, kind: str) -> Iterator[None]:
        """Time a reconciliation and count its result: a kopf TemporaryError is a retry,
        any other exception an error."""
        started = time.perf_counter()
        result = "ok"
        try:
            yield
        except kopf.TemporaryError:
            result = "retry"
            raise
        except Exception:
            result = "error"
            raise
        finally:
            self.reconcile_seconds.labels(kind).observe(time.perf_counter() - started)
            self.reconcile_total.labels(kind, result).inc()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)


METRICS = OperatorMetrics()
"""The process's metrics; tests make their own OperatorMetrics."""
