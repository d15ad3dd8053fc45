"""Final models for a task this node does not know, or has not drawn yet: a relay a block ahead
of it, or this node syncing after a restart. Dropping them would lose them for good (a miner
announces its final model once), so they wait, within a byte budget, until the chain says
whether their miners were drawn; then the intake judges them as if they had just arrived."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pouw.budgets import (
    WAITING_MODEL_BLOCKS,
    WAITING_MODEL_BYTES_PER_SENDER,
    WAITING_MODEL_BYTES_TOTAL,
    ByteBudget,
)
from pouw.errors import Reason
from pouw.node.items import FinalModel

Key = tuple[bytes, bytes]
"""(task id, miner key)"""


@dataclass
class WaitingModels:
    budget: ByteBudget[bytes, Key] = field(
        default_factory=lambda: ByteBudget(
            WAITING_MODEL_BYTES_PER_SENDER, WAITING_MODEL_BYTES_TOTAL
        )
    )
    _models: dict[Key, tuple[FinalModel, int]] = field(default_factory=dict)
    """What waits, and the height it arrived at."""

    def park(self, final: FinalModel, height: int) -> Reason | None:
        """Keep `final` (in place of its miner's earlier one for the task), or say why not."""
        key = (final.task_id, final.miner)
        refused = self.budget.charge(key, final.miner, len(final.model))
        if refused is None:
            self._models[key] = (final, height)
        return refused

    def ready(self, known: Callable[[bytes], bool | None], height: int) -> list[FinalModel]:
        """Take out the models whose task `known` now decides (True: judge it; False: closed,
        let go) and those that waited past WAITING_MODEL_BLOCKS; return the first kind."""
        taken: list[FinalModel] = []
        for key, (final, since) in list(self._models.items()):
            decided = known(final.task_id)
            if decided is None and height - since <= WAITING_MODEL_BLOCKS:
                continue
            del self._models[key]
            self.budget.release(key)
            if decided:
                taken.append(final)
        return taken

    def __len__(self) -> int:
        return len(self._models)
