"""Health from recent work (latency, success) and this process's load (psutil).

The window is bounded so a node that failed an hour ago and recovered reads healthy again, and
one that starts failing now reads unhealthy within a few hundred requests.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import psutil

WINDOW = 512
MIN_SUCCESS_RATE = 0.5
MAX_MEMORY_PERCENT = 95.0


@dataclass(frozen=True)
class HealthMetrics:
    """The seed's health fields: response_time in ms, success_rate in [0, 1], usage in %."""

    response_time: float
    success_rate: float
    cpu_usage: float
    memory_usage: float
    healthy: bool


class HealthTracker:
    """Thread-safe: the API records on the event loop, verification threads record too."""

    def __init__(self, process: psutil.Process | None = None, window: int = WINDOW) -> None:
        self._process = psutil.Process() if process is None else process
        self._recent: deque[tuple[float, bool]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._process.cpu_percent(None)  # the first reading is 0.0: it only starts the clock

    def record(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self._recent.append((seconds, ok))

    def snapshot(self) -> HealthMetrics:
        """CPU is measured since the previous snapshot, so it is the load between two probes."""
        with self._lock:
            recent = list(self._recent)
        response_ms = 1000 * sum(s for s, _ in recent) / len(recent) if recent else 0.0
        success = sum(1 for _, ok in recent if ok) / len(recent) if recent else 1.0
        memory = float(self._process.memory_percent())
        return HealthMetrics(
            response_time=round(response_ms, 3),
            success_rate=success,
            cpu_usage=float(self._process.cpu_percent(None)),
            memory_usage=memory,
            healthy=success >= MIN_SUCCESS_RATE and memory < MAX_MEMORY_PERCENT,
        )
