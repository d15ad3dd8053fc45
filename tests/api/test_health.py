from __future__ import annotations

import pytest

from pouw.monitoring.health import HealthTracker
from tests.api.fake_node import FakeProcess


def _tracker(process: FakeProcess, window: int = 512) -> HealthTracker:
    return HealthTracker(process, window=window)  # type: ignore[arg-type]


def test_an_idle_node_is_healthy() -> None:
    metrics = _tracker(FakeProcess(cpu=3.0, memory=20.0)).snapshot()
    assert (metrics.response_time, metrics.success_rate) == (0.0, 1.0)
    assert (metrics.cpu_usage, metrics.memory_usage, metrics.healthy) == (3.0, 20.0, True)


def test_response_time_is_the_mean_in_ms_and_success_the_fraction_ok() -> None:
    tracker = _tracker(FakeProcess())
    for seconds, ok in ((0.010, True), (0.020, True), (0.030, False), (0.040, True)):
        tracker.record(seconds, ok)
    metrics = tracker.snapshot()
    assert metrics.response_time == pytest.approx(25.0)
    assert metrics.success_rate == 0.75 and metrics.healthy


def test_mostly_failing_is_unhealthy_and_recovers_as_the_window_moves() -> None:
    tracker = _tracker(FakeProcess(), window=4)
    for _ in range(3):
        tracker.record(0.001, False)
    tracker.record(0.001, True)
    assert not tracker.snapshot().healthy  # 1/4 < 0.5
    tracker.record(0.001, True)
    assert tracker.snapshot().success_rate == 0.5 and tracker.snapshot().healthy
    for _ in range(4):
        tracker.record(0.001, True)
    assert tracker.snapshot().success_rate == 1.0


def test_memory_pressure_is_unhealthy() -> None:
    assert not _tracker(FakeProcess(memory=95.0)).snapshot().healthy
    assert _tracker(FakeProcess(memory=94.9)).snapshot().healthy


def test_cpu_is_measured_between_snapshots() -> None:
    process = FakeProcess()
    tracker = _tracker(process)
    assert process.cpu_calls == 1  # the first reading starts psutil's clock
    tracker.snapshot()
    assert process.cpu_calls == 2


def test_the_real_process_can_be_read() -> None:
    metrics = HealthTracker().snapshot()
    assert 0.0 < metrics.memory_usage < 100.0 and metrics.cpu_usage >= 0.0
