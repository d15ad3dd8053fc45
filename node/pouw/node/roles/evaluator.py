"""The evaluator role: when this node holds the evaluator ticket a task drew, score the drawn
miners' final models on the withheld test set, rank them and close the task on chain with a
signed TASK_RESULT that splits the escrow (`pouw.economics.rewards`).

It waits for every drawn miner's final model, or EVALUATION_GRACE_S after the first arrived;
miners slashed since the draw, and those the node's screening flagged in most of their rounds,
are left out of the ranking and its payouts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pouw.blockchain.state import TaskRecord
from pouw.blockchain.transactions import RankedModel, TaskResult
from pouw.crypto import address_of
from pouw.economics.rewards import split_escrow
from pouw.economics.selection import TaskAssignment
from pouw.errors import InvalidTransaction
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import evaluate
from pouw.ml.models import CorruptModel, build_model, load_model_bytes, model_hash
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel
from pouw.node.ledger import Ledger
from pouw.roles import NodeRole

log = logging.getLogger("pouw.node")

EVALUATION_GRACE_S = 60.0
"""How long an evaluator waits for missing final models after the first one arrives."""
Excluded = Callable[[bytes], set[str]]
"""The miners (addresses) of a task that this node's screening leaves out of its ranking."""


class EvaluatorRole:
    def __init__(
        self,
        context: NodeContext,
        ledger: Ledger,
        excluded: Excluded = lambda task_id: set(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.excluded = excluded
        self.clock = clock
        self._first_final_model: dict[bytes, float] = {}
        context.events.final_model.subscribe(self._arrived)
        context.events.tick.subscribe(self._on_tick)

    def _arrived(self, final: FinalModel) -> None:
        self._first_final_model.setdefault(final.task_id, self.clock())
        self.maybe_evaluate(final.task_id)

    def _on_tick(self, tick: int) -> None:
        if tick % 2 == 0:
            for task_id in list(self._first_final_model):
                self.maybe_evaluate(task_id)

    def maybe_evaluate(self, task_id: bytes) -> None:
        record = self.ledger.chain.state.tasks.get(task_id)
        if record is None or record.status != "open":
            self._first_final_model.pop(task_id, None)
            return
        progress = self.context.tasks.of(task_id)
        if progress.evaluating or self._result_pending(task_id):
            return
        assignment = self.ledger.draw(record)
        if assignment is None or not assignment.holds(NodeRole.EVALUATOR, self.context.address):
            return
        models = progress.final_models
        drawn = [t.owner for t in assignment.miners]
        left_out = self._left_out(record, assignment)
        ranked = [m for m in drawn if m not in left_out] or drawn
        waited = self.clock() - self._first_final_model.get(task_id, self.clock())
        if not models or (any(m not in models for m in ranked) and waited < EVALUATION_GRACE_S):
            return
        progress.evaluating = True
        if left_out:
            log.info("task %s: ranking without %s", task_id.hex()[:16], ", ".join(sorted(left_out)))
        candidates = [models[m] for m in ranked if m in models]
        candidates = candidates or [models[m] for m in drawn if m in models]
        self.context.background.spawn(self._evaluate(record, assignment, candidates))

    def _result_pending(self, task_id: bytes) -> bool:
        """Our TASK_RESULT for the task waits in the mempool (a restart replays it from the
        journal): a second one that differs would be slashing evidence against us."""
        key = self.context.key.public_key
        return any(
            tx.sender == key
            and isinstance(tx.payload, TaskResult)
            and tx.payload.task_id == task_id
            for tx in self.ledger.mempool.transactions()
        )

    def _left_out(self, record: TaskRecord, assignment: TaskAssignment) -> set[str]:
        """Drawn miners slashed since the draw, and those the screening excludes."""
        tickets = self.ledger.chain.state.tickets
        slashed = {t.owner for t in assignment.miners if t.ticket_id not in tickets}
        return slashed | self.excluded(record.task_id)

    async def _evaluate(
        self, record: TaskRecord, assignment: TaskAssignment, candidates: list[FinalModel]
    ) -> None:
        scored = await self.context.background.check(score_models, record, candidates)
        progress = self.context.tasks.of(record.task_id)
        if not scored:
            progress.failure = "no final model passed evaluation"
            return
        try:
            self.ledger.submit(task_result(record, assignment, scored))
        except InvalidTransaction as error:
            log.warning("task result refused: %s", error)
            progress.evaluating = False


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
