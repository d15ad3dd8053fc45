"""What a block's iteration claims against its branch, checked when the block is applied.

Re-execution (`pouw.mining.verify`) shows that the iteration was computed; this rule shows that
its miner was entitled to seal it, and only once:

- the task is open on the branch;
- the IT_RES names a live MINER ticket of the block's miner, drawn for the task at
  `worker_index` (the bootstrap task: any live MINER ticket, worker 0 of 1; while the branch
  holds no MINER ticket at all, any key may mine the bootstrap task with the zero ticket id,
  so that the first tickets can be mined);
- its position (epoch, iteration) is after the last one this ticket sealed on the task on the
  branch, so a position seals at most one block, with at most its nonce budget;
- a segment that already sealed a block keeps the checkpoint it committed to.
"""

from __future__ import annotations

from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.state import LedgerState, Position, WorkClaim
from pouw.crypto import ZERO_HASH
from pouw.errors import InvalidBlock, MalformedData, Reason
from pouw.mining.segments import position, segment_start
from pouw.roles import NodeRole


class ClaimRule:
    """Reads the consensus parameters from the state it checks against."""

    def __call__(self, block: Block, state: LedgerState) -> WorkClaim | None:
        height = block.header.height
        if not block.iteration_message:
            return None  # claims nothing; the seal rule refuses such a block on every node
        try:
            message = decode_iteration_message(block.iteration_message)
        except MalformedData as error:
            raise InvalidBlock(Reason.MALFORMED_ITERATION, str(error), height) from None
        task = state.tasks.get(message.task_id)
        if task is None or task.status != "open":
            raise InvalidBlock(Reason.UNKNOWN_TASK, "no such open task on this branch", height)
        params = state.params
        why_not = self._entitlement(message, task, state, bootstrap_task_id(params))
        if why_not is not None:
            raise InvalidBlock(Reason.NOT_DRAWN, why_not, height)
        key = message.task_id + message.ticket_id
        if message.ticket_id == ZERO_HASH:
            key = message.task_id + message.miner
        at = position(message.epoch, message.iteration)
        segment = position(
            message.epoch, segment_start(message.iteration, params.checkpoint_interval)
        )
        prior = state.positions.get(key)
        if prior is not None and at <= prior.last:
            raise InvalidBlock(
                Reason.STALE_POSITION,
                f"epoch {message.epoch} iteration {message.iteration} is not after the last "
                f"sealed position ({prior.last >> 32}, {prior.last & 0xFFFFFFFF})",
                height,
            )
        if (
            prior is not None
            and prior.segment == segment
            and prior.checkpoint_hash != message.checkpoint_hash
        ):
            raise InvalidBlock(
                Reason.SEGMENT_FORK, "the segment already committed to another checkpoint", height
            )
        return WorkClaim(key, Position(at, segment, message.checkpoint_hash))

    def _entitlement(
        self,
        message: IterationMessage,
        task: TaskRecord,
        state: LedgerState,
        bootstrap_id: bytes | None,
    ) -> str | None:
        """None when the miner may seal this iteration, else why not."""
        if task.task_id == bootstrap_id:
            if message.ticket_id == ZERO_HASH:
                if state.live_tickets(NodeRole.MINER):
                    return "the bootstrap phase is over: a MINER ticket is required"
                return None
            return self._live_miner_ticket(message, state)
        why_not = self._live_miner_ticket(message, state)
        if why_not is not None:
            return why_not
        if task.drawn is None:
            return "the task's miners are not drawn yet"
        seats = task.drawn.miners
        if message.worker_index >= len(seats):
            return f"worker slot {message.worker_index} of {len(seats)} drawn"
        if seats[message.worker_index].ticket_id != message.ticket_id:
            return f"the ticket was not drawn for slot {message.worker_index}"
        return None

    @staticmethod
    def _live_miner_ticket(message: IterationMessage, state: LedgerState) -> str | None:
        ticket = state.tickets.get(message.ticket_id)
        if ticket is None:
            return "no live ticket with this id"
        if ticket.role != NodeRole.MINER:
            return f"a {ticket.role} ticket cannot mine"
        if ticket.public_key != message.miner:
            return "the ticket belongs to another key"
        return None
