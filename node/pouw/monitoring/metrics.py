"""The node's Prometheus metrics, on a registry of its own (several nodes may share a process).

Names follow the README's metric names; every label value is a short reason or kind, never an id.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `_created` series double the exposition and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

ATTACK_KINDS = ("fake_work", "anomalous_update")
"""The `kind` label values of pouw_attacks_detected_total."""
TRAINING_FAILURE_KINDS = ("dataset", "diverged", "error")
"""The `kind` label values of pouw_training_failures_total (`pouw.node.worker`)."""


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.chain_height = Gauge("pouw_chain_height", "Height of the main chain's tip", registry=r)
        self.blocks_mined = Counter(
            "pouw_blocks_mined", "Blocks this node mined and the chain accepted", registry=r
        )
        self.blocks_accepted = Counter(
            "pouw_blocks_accepted", "Blocks accepted from anywhere", registry=r
        )
        self.blocks_rejected = Counter(
            "pouw_blocks_rejected", "Blocks rejected, by rule", ["reason"], registry=r
        )
        self.blocks_verified = Counter(
            "pouw_blocks_verified", "Blocks this verifier re-executed and passed", registry=r
        )
        self.peers = Gauge("pouw_peers", "Connected peers", registry=r)
        self.messages_received = Counter(
            "pouw_messages_received", "Network messages received, by type", ["type"], registry=r
        )
        self.messages_dropped = Counter(
            "pouw_messages_dropped", "Network messages dropped, by reason", ["reason"], registry=r
        )
        self.over_budget = Counter(
            "pouw_over_budget",
            "Items a store refused for its byte budget, by store and reason"
            " (model_too_large, over_sender_budget, store_full)",
            ["store", "reason"],
            registry=r,
        )
        self.peers_banned = Counter(
            "pouw_peers_banned", "Peers disconnected for ban score", registry=r
        )
        self.iterations = Counter(
            "pouw_iterations", "Training iterations this node ran", registry=r
        )
        self.mining_held = Counter(
            "pouw_mining_held",
            "Training iterations held back while the node's import backlog passed its bound or"
            " it caught up with a peer: stage nonces (no nonces drawn) or training (paused)",
            ["stage"],
            registry=r,
        )
        self.task_loss = Gauge("pouw_task_loss", "Loss of the last iteration", registry=r)
        self.task_accuracy = Gauge(
            "pouw_task_accuracy", "Batch accuracy of the last iteration", registry=r
        )
        self.verification_seconds = Histogram(
            "pouw_verification_seconds",
            "Seconds to re-execute one block",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.block_rejection_seconds = Histogram(
            "pouw_block_rejection_seconds",
            "Seconds from a peer's block arriving to its rejection",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.attacks_detected = Counter(
            "pouw_attacks_detected", "Attacks detected, by kind", ["kind"], registry=r
        )
        for kind in ATTACK_KINDS:
            # Exported at 0 from the start: increase() cannot see a series' first sample.
            self.attacks_detected.labels(kind)
        self.tasks_training = Gauge(
            "pouw_tasks_training",
            "Client tasks on chain in the training phase, as this node sees them",
            registry=r,
        )
        self.task_assigned = Gauge(
            "pouw_task_assigned",
            "1 while this node is drawn for an open client task it has not finished training",
            registry=r,
        )
        self.training_failures = Counter(
            "pouw_training_failures",
            "Client tasks whose training failed on this node (so it trains them no more), by kind",
            ["kind"],
            registry=r,
        )
        for kind in TRAINING_FAILURE_KINDS:
            self.training_failures.labels(kind)
        self.api_requests = Counter(
            "pouw_api_requests", "HTTP API requests, by status class", ["status"], registry=r
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
