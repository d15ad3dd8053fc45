"""The screening role: where this node checks a task (it holds a supervisor, verifier or
evaluator ticket the task drew, and at least MIN_SCREENED miners were drawn), screen each
round of the miners' updates (`pouw.security.rounds.TaskScreen`) for Byzantine miners. A
screened miner gains reputation, a flagged one loses it and counts as a detected attack; a
miner flagged in most of its rounds is `excluded` from the task's ranking.
"""

from __future__ import annotations

import logging

from pouw.blockchain.iteration_message import IterationMessage
from pouw.crypto import address_of
from pouw.ml.compression import CompressedUpdate
from pouw.node.context import NodeContext
from pouw.node.items import FinalModel, IterationRecord
from pouw.node.ledger import Ledger
from pouw.roles import NodeRole
from pouw.security.rounds import MIN_SCREENED, ScreenedRound, TaskScreen
from pouw.spec import model_parameters

log = logging.getLogger("pouw.node")

SCREENING_ROLES = (NodeRole.SUPERVISOR, NodeRole.VERIFIER, NodeRole.EVALUATOR)


class ScreeningRole:
    def __init__(self, context: NodeContext, ledger: Ledger) -> None:
        self.context = context
        self.ledger = ledger
        self.screens: dict[bytes, TaskScreen | None] = {}
        """Per task: how this node screens its miners' updates (None: it does not)."""
        context.events.peer_iteration.subscribe(self._take_update)
        context.events.final_model.subscribe(self._finished)

    def excluded(self, task_id: bytes) -> set[str]:
        """The task's miners (addresses) flagged in most of their screened rounds."""
        screen = self.screens.get(task_id)
        return set() if screen is None else {address_of(m) for m in screen.excluded()}

    def _take_update(self, message: IterationMessage, record: IterationRecord) -> None:
        if message.miner == self.context.key.public_key:
            return
        screen = self._screen(message.task_id)
        task = self.ledger.chain.state.tasks.get(message.task_id)
        if screen is None or task is None:
            return
        size = model_parameters(task.spec.model)
        try:
            update = CompressedUpdate.from_bytes(record.update, size)
        except ValueError:
            return
        if update.size == size:
            self._judged(screen.add(message.miner, message.epoch, update.to_dense()))

    def _finished(self, final: FinalModel) -> None:
        screen = self.screens.get(final.task_id)
        if screen is not None:
            self._judged(screen.finish(final.miner))

    def _screen(self, task_id: bytes) -> TaskScreen | None:
        if task_id in self.screens:
            return self.screens[task_id]
        record = self.ledger.chain.state.tasks.get(task_id)
        assignment = None if record is None else self.ledger.draw(record)
        if record is None or assignment is None or not assignment.miners:
            return None  # not on chain yet, or nobody drawn yet: asked again next time
        address = self.context.address
        checks = any(assignment.holds(role, address) for role in SCREENING_ROLES)
        screen = None
        if checks and len(assignment.miners) >= MIN_SCREENED:
            screen = TaskScreen([t.public_key for t in assignment.miners], record.spec.epochs)
        self.screens[task_id] = screen
        return screen

    def _judged(self, rounds: list[ScreenedRound]) -> None:
        """Screened miners gain reputation, flagged ones lose it and count as detections."""
        context = self.context
        for result in rounds:
            for miner in result.screened:
                address = address_of(miner)
                if miner in result.flagged:
                    context.reputation.rejected(address)
                    context.counters.attack("anomalous_update")
                else:
                    context.reputation.valid(address)
            if result.flagged:
                flagged = ", ".join(address_of(m) for m in result.flagged)
                log.info("round %d: anomalous updates from %s", result.round, flagged)
