"""The node's series the alerts need exist from the first scrape: increase() and rate() cannot
see a counter's first sample, and a gauge that is absent reads as no data, not as 0."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pouw.monitoring.metrics import ATTACK_KINDS, TRAINING_FAILURE_KINDS, NodeMetrics


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = NodeMetrics().exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_attack_counters_start_at_zero_for_every_kind() -> None:
    exported = samples()
    for kind in ATTACK_KINDS:
        assert exported[("pouw_attacks_detected_total", (("kind", kind),))] == 0.0


def test_the_task_gauges_start_at_zero() -> None:
    exported = samples()
    assert exported[("pouw_tasks_training", ())] == 0.0
    assert exported[("pouw_task_assigned", ())] == 0.0
    assert exported[("pouw_iterations_total", ())] == 0.0


def test_training_failure_counters_start_at_zero_for_every_kind() -> None:
    exported = samples()
    for kind in TRAINING_FAILURE_KINDS:
        assert exported[("pouw_training_failures_total", (("kind", kind),))] == 0.0
