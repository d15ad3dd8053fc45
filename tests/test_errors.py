"""Reasons as types: every refusal the node can give is a `Reason`, raised somewhere, and its
traits say how the node treats it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pouw.config import ConfigError
from pouw.errors import InvalidBlock, MalformedData, PouwError, Reason, ReorgTooDeep
from pouw.manifest import ManifestError
from pouw.ml.datasets import DatasetError
from pouw.ml.models import CorruptModel
from pouw.node import NodeNotRunning
from pouw.spec import TaskSpecError

NODE = Path(__file__).resolve().parents[1] / "node" / "pouw"


def _reasons_named_in_code() -> set[str]:
    named: set[str] = set()
    for path in NODE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "Reason"
            ):
                named.add(node.attr)
    return named


def test_every_reason_is_given_somewhere() -> None:
    assert {reason.name for reason in Reason} <= _reasons_named_in_code()


def test_only_re_execution_and_claim_failures_are_fake_work() -> None:
    """What the miner signed is wrong; never what a relay could have changed (the checkpoint's
    bytes: `checkpoint_bytes`)."""
    fake = {reason for reason in Reason if reason.fake_work}
    assert fake == {
        "bad_worker_index", "bad_position", "batch_mismatch", "checkpoint_mismatch",
        "corrupt_model", "stale_start_model", "loss_mismatch", "accuracy_mismatch",
        "update_mismatch", "not_drawn", "stale_position", "segment_fork",
    }  # fmt: skip
    assert not Reason.CHECKPOINT_BYTES.fake_work


def test_an_honest_relay_may_cause_only_races_with_the_chain_and_the_mempool() -> None:
    racy = {reason for reason in Reason if reason.relay_may_cause}
    assert racy == {
        "replay", "duplicate", "duplicate_nonce", "mempool_full", "nonce_gap",
        "too_many_pending", "unknown_task", "task_closed", "not_an_evaluator",
        "unknown_ticket", "not_a_verifier", "task_expired", "task_not_drawn",
        "result_already_sent", "already_withdrawn", "reporter_without_ticket", "store_full",
    }  # fmt: skip
    assert not any(reason.fake_work for reason in racy)


def test_a_reason_is_its_word() -> None:
    assert Reason("loss_mismatch") is Reason.LOSS_MISMATCH
    assert f"{Reason.LOSS_MISMATCH}" == "loss_mismatch"
    assert str(InvalidBlock(Reason.LOSS_MISMATCH, "re-run", 3)) == (
        "invalid block at height 3: loss_mismatch: re-run"
    )
    assert ReorgTooDeep(120, 100).reason is Reason.REORG_TOO_DEEP


@pytest.mark.parametrize(
    "error",
    [
        InvalidBlock, ReorgTooDeep, MalformedData, ConfigError, TaskSpecError, ManifestError,
        DatasetError, CorruptModel, NodeNotRunning,
    ],
)  # fmt: skip
def test_the_nodes_errors_have_one_root(error: type[Exception]) -> None:
    assert issubclass(error, PouwError)
