"""The evaluator role: when this node holds an evaluator ticket a task drew, score the drawn
miners' final models on the withheld test set, rank them and send its signed TASK_RESULT; the
ledger settles the task once a majority of the drawn evaluators agree
(`pouw.blockchain.settlement`).

It waits for every drawn miner's final model until the task's evaluation height (its deadline
less the chain's settlement blocks), then scores the ones it has. A missing, corrupt or junk
model never ends its watch: with nothing valid to rank it waits for more, and at the deadline
the ledger refunds the client. A result refused is scored and sent again; one dropped from the
mempool unmined is sent again as it was: it never signs a second, different result for a task
while its first may still be mined, which would be slashing evidence against it
(`pouw.blockchain.slashing`). Miners slashed since the draw, and those the node's screening
flagged in most of their rounds (unless nobody else delivered), are left out of the ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pouw.blockchain.settlement import TaskRecord, evaluation_height
from pouw.blockchain.transactions import RankedModel, TaskResult
from pouw.crypto import address_of, sha256
from pouw.economics.selection import TaskAssignment
from pouw.errors import InvalidTransaction, Reason
from pouw.ml.datasets import BUILTIN_ONLY, DatasetSource, load_dataset
from pouw.ml.iteration import evaluate
from pouw.ml.models import CorruptModel, build_model, load_model_bytes, model_hash
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel
from pouw.node.ledger import Ledger
from pouw.node.sent_results import SentResults
from pouw.roles import NodeRole

log = logging.getLogger("pouw.node")

Excluded = Callable[[bytes], set[str]]
"""The miners (addresses) of a task that this node's screening leaves out of its ranking."""
FINAL_REFUSALS = frozenset({Reason.RESULT_ALREADY_SENT, Reason.TASK_CLOSED, Reason.TASK_EXPIRED})
"""Refusals no later try can change: the evaluator stops there."""


class EvaluatorRole:
    def __init__(
        self, context: NodeContext, ledger: Ledger, excluded: Excluded = lambda task_id: set()
    ) -> None:
        self.context = context
        self.ledger = ledger
        self.excluded = excluded
        self._watching: set[bytes] = set()
        """Tasks with final models here, looked at again every other tick."""
        self._scored: dict[bytes, frozenset[bytes]] = {}
        """Task -> the candidates (item ids) last scored with nothing valid among them."""
        self._sent_results = SentResults(context.config.data_dir / "sent-results")
        """The TASK_RESULT this node signed for a task, until the chain holds it."""
        context.events.final_model.subscribe(self._arrived)
        context.events.tick.subscribe(self._on_tick)

    def _arrived(self, final: FinalModel) -> None:
        self._watching.add(final.task_id)
        self.maybe_evaluate(final.task_id)

    def _on_tick(self, tick: int) -> None:
        if tick % 2 == 0:
            for task_id in list(self._watching):
                self.maybe_evaluate(task_id)

    def maybe_evaluate(self, task_id: bytes) -> None:
        record = self.ledger.chain.state.tasks.get(task_id)
        if record is None or record.status != "open" or self._sent(record):
            self._watching.discard(task_id)
            self._scored.pop(task_id, None)
            self._sent_results.discard(task_id)
            return
        progress = self.context.tasks.of(task_id)
        if progress.evaluating or self._result_pending(task_id):
            return
        sent = self._sent_results.get(task_id)
        if sent is not None:  # dropped unmined (evicted, or reorged stale): the same again
            self._submit(record, sent, resend=True)
            return
        assignment = self.ledger.draw(record)
        if assignment is None or not assignment.holds(NodeRole.EVALUATOR, self.context.address):
            return
        candidates = self._candidates(record, assignment)
        if not candidates:
            return
        key = frozenset(final.item_id() for final in candidates)
        if self._scored.get(task_id) == key:
            return  # nothing valid among these: wait for another model, or the deadline
        progress.evaluating = True
        self.context.background.spawn(self._evaluate(record, candidates, key))

    def _sent(self, record: TaskRecord) -> bool:
        return any(entry.evaluator == self.context.address for entry in record.results)

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

    def _candidates(self, record: TaskRecord, assignment: TaskAssignment) -> list[FinalModel]:
        """The drawn miners' final models to score: none until every miner still ranked
        delivered, or the evaluation height is reached."""
        models = self.context.tasks.of(record.task_id).final_models
        tickets = self.ledger.chain.state.tickets
        gone = record.withdrawn()
        drawn = [t.owner for t in assignment.miners if t.ticket_id in tickets]
        drawn = [miner for miner in drawn if miner not in gone]
        left_out = self.excluded(record.task_id)
        ranked = [m for m in drawn if m not in left_out] or drawn
        due = self.ledger.chain.height + 1 >= evaluation_height(self.context.params, record)
        if not due and any(m not in models for m in ranked):
            return []
        if left_out:
            log.info("task %s: ranking without %s", record.task_id.hex()[:16], sorted(left_out))
        return [models[m] for m in ranked if m in models] or [
            models[m] for m in drawn if m in models
        ]

    async def _evaluate(
        self, record: TaskRecord, candidates: list[FinalModel], key: frozenset[bytes]
    ) -> None:
        scored = await self.context.background.check(
            score_models, record, candidates, self.context.datasets, self.context.tasks.with_bytes
        )
        progress = self.context.tasks.of(record.task_id)
        if not scored:
            log.warning("task %s: no final model passed evaluation yet", record.task_id.hex()[:16])
            self._scored[record.task_id] = key
            progress.evaluating = False
            return
        self._submit(record, task_result(record, scored))

    def _submit(self, record: TaskRecord, result: TaskResult, *, resend: bool = False) -> None:
        """Send `result`; refused, it is tried again on a later tick, unless no try can pass.
        A first try is kept before it can leave the node, and forgotten if refused here (it
        never left); a result sent before is kept whatever happens: peers may still mine it."""
        if not resend:
            self._sent_results.put(result)
        try:
            self.ledger.submit(result)
        except InvalidTransaction as error:
            log.warning("task result refused: %s", error)
            if not resend:
                self._sent_results.discard(record.task_id)
            if error.reason in FINAL_REFUSALS:
                self._watching.discard(record.task_id)
                return
        self.context.tasks.of(record.task_id).evaluating = False


def score_models(
    record: TaskRecord,
    candidates: list[FinalModel],
    source: DatasetSource = BUILTIN_ONLY,
    read: Callable[[FinalModel], FinalModel | None] = lambda final: final,
) -> list[tuple[FinalModel, float]]:
    """Test accuracy of each final model whose bytes load and match its claimed hash; `read`
    gives a kept model its bytes back (the task book keeps them on disk only)."""
    dataset = load_dataset(record.spec.dataset, source)
    scored: list[tuple[FinalModel, float]] = []
    for kept in candidates:
        final = read(kept)
        if final is None:
            continue
        model = build_model(record.spec.model, seed=record.task_id)
        try:
            load_model_bytes(model, final.model)
        except CorruptModel:
            continue
        if model_hash(model) != final.model_hash:
            continue
        scored.append((final, evaluate(model, dataset.x_test, dataset.y_test)))
    return scored


def task_result(record: TaskRecord, scored: list[tuple[FinalModel, float]]) -> TaskResult:
    """The ranking, best accuracy first and ties by address, as the ledger requires."""
    entries = [
        RankedModel(
            address_of(final.miner),
            final.model_hash,
            round(accuracy, 6),
            sha256(final.model),
            final.signature,
        )
        for final, accuracy in scored
    ]
    return TaskResult(record.task_id, tuple(sorted(entries, key=lambda e: (-e.accuracy, e.miner))))
