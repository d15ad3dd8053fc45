"""What happens in a node, as typed events the parts subscribe to.

The ledger, the intake and the miner emit; the roles, the tally and the task book listen.
Handlers run at once, in the order they subscribed, on the node's event loop: a part that
needs another to have seen an event first subscribes after it (the composition root, node.py,
fixes that order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, ParamSpec

from pouw.blockchain.block import Block
from pouw.blockchain.chain import ChainUpdate
from pouw.blockchain.iteration_message import IterationMessage
from pouw.blockchain.transactions import Transaction
from pouw.errors import InvalidBlock
from pouw.node.items import FinalModel, IterationRecord

P = ParamSpec("P")


class Event(Generic[P]):
    """One kind of happening: `subscribe` a handler, `emit` to call every handler in turn."""

    def __init__(self) -> None:
        self._handlers: list[Callable[P, None]] = []

    def subscribe(self, handler: Callable[P, None]) -> None:
        self._handlers.append(handler)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for handler in self._handlers:
            handler(*args, **kwargs)


@dataclass(frozen=True)
class NodeEvents:
    # -- the ledger --------------------------------------------------------------------------
    block_connected: Event[[Block]] = field(default_factory=Event)
    """A block joined the main chain (after a reorg, those of the new branch, oldest first)."""
    block_disconnected: Event[[Block]] = field(default_factory=Event)
    """A block left the main chain in a reorg (before the new branch's are connected)."""
    chain_changed: Event[[ChainUpdate]] = field(default_factory=Event)
    """The main chain moved (extended or reorganized); the mempool and template follow it."""
    transaction_admitted: Event[[Transaction]] = field(default_factory=Event)
    """A transaction entered the mempool: this node's own, gossiped, or restored on start."""
    # -- the intake: what peers sent ------------------------------------------------------------
    block_accepted: Event[[Block]] = field(default_factory=Event)
    """A peer's block passed every check and is stored (main chain or side branch)."""
    block_rejected: Event[[Block, InvalidBlock]] = field(default_factory=Event)
    """A peer's block failed a check, with the reason."""
    iteration_record: Event[[IterationRecord]] = field(default_factory=Event)
    """A signed IT_RES, this node's own or a peer's, whatever its task."""
    peer_iteration: Event[[IterationMessage, IterationRecord]] = field(default_factory=Event)
    """A peer's IT_RES for a task on chain (this node's own echoes included)."""
    final_model: Event[[FinalModel]] = field(default_factory=Event)
    """A final model, this node's own or a peer's, stored in the task book."""
    # -- time ------------------------------------------------------------------------------------
    tick: Event[[int]] = field(default_factory=Event)
    """Every TICK_S seconds while the node runs, with the tick's number (from 1)."""
