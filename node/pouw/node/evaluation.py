"""The evaluator's work: score the miners' final models on the withheld test set, rank them,
and split the task's escrow (pouw.economics.rewards)."""

from __future__ import annotations

from pouw.blockchain.state import TaskRecord
from pouw.blockchain.transactions import RankedModel, TaskResult
from pouw.crypto import address_of
from pouw.economics.rewards import split_escrow
from pouw.economics.selection import TaskAssignment
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import evaluate
from pouw.ml.models import CorruptModel, build_model, load_model_bytes, model_hash
from pouw.node.items import FinalModel


def score_models(
    record: TaskRecord, candidates: list[FinalModel]
) -> list[tuple[FinalModel, float]]:
    """Test accuracy of each final model whose bytes load and match its claimed hash."""
    dataset = load_dataset(record.spec.dataset)
    scored: list[tuple[FinalModel, float]] = []
    for final in candidates:
        model = build_model(record.spec.model, seed=record.task_id)
        try:
            load_model_bytes(model, final.model)
        except CorruptModel:
            continue
        if model_hash(model) != final.model_hash:
            continue
        scored.append((final, evaluate(model, dataset.x_test, dataset.y_test)))
    return scored


def task_result(
    record: TaskRecord, assignment: TaskAssignment, scored: list[tuple[FinalModel, float]]
) -> TaskResult:
    ordered = sorted(scored, key=lambda entry: (-entry[1], entry[0].miner))
    ranking = tuple(
        RankedModel(address_of(model.miner), model.model_hash, round(accuracy, 6))
        for model, accuracy in ordered
    )
    payouts = split_escrow(
        record.escrow,
        [entry.miner for entry in ranking],
        [t.owner for t in assignment.supervisors],
        [t.owner for t in assignment.verifiers],
        [t.owner for t in assignment.evaluators],
    )
    return TaskResult(record.task_id, ranking, payouts)
