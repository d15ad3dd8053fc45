"""The claim rule: a block's iteration must be its miner's to seal, on this branch, once.

Each test is an attack the rule stops: an outsider or an undrawn ticket mining a client task,
a position sealed twice, a segment that changes its checkpoint, the bootstrap phase used after
it ended."""

from __future__ import annotations

import msgspec
import pytest
from tests.node.fakes import IRIS, PARAMS, key, task, ticket
from tests.support.items import iteration_message

from pouw.blockchain.block import Block, BlockHeader
from pouw.blockchain.draw import TaskDraw
from pouw.blockchain.params import bootstrap_task_id
from pouw.blockchain.state import LedgerState, WorkClaim
from pouw.crypto import ZERO_HASH, KeyPair, sha256
from pouw.errors import InvalidBlock
from pouw.mining.claims import ClaimRule
from pouw.roles import NodeRole

TASK = sha256(b"a client task")
DRAWN, UNDRAWN, VERIFIER = key("m0"), key("m1"), key("m2")
RULE = ClaimRule()


def state_with_a_drawn_task() -> LedgerState:
    state = LedgerState.genesis(PARAMS)
    for owner, role in ((DRAWN, NodeRole.MINER), (UNDRAWN, NodeRole.MINER)):
        held = ticket(owner, role)
        state.tickets[held.ticket_id] = held
    verifier = ticket(VERIFIER, NodeRole.VERIFIER)
    state.tickets[verifier.ticket_id] = verifier
    drawn = TaskDraw(ZERO_HASH, 3, (ticket(DRAWN, NodeRole.MINER),), (), (), ())
    state.tasks[TASK] = msgspec.structs.replace(task(TASK, IRIS), drawn=drawn)
    return state


def block_of(miner: KeyPair, **fields: object) -> Block:
    fields = {
        "ticket_id": ticket(miner, NodeRole.MINER).ticket_id,
        "epoch": 0,
        "iteration": 0,
        **fields,
    }
    message = iteration_message(TASK, miner.public_key, **fields)
    header = BlockHeader(
        version=1, height=5, prev_hash=ZERO_HASH, merkle_root=ZERO_HASH, timestamp_ms=0,
        difficulty=1, nonce=0, miner=miner.public_key, iteration_hash=ZERO_HASH,
        history_commitment=ZERO_HASH, precursor=ZERO_HASH,
    )  # fmt: skip
    return Block(header=header, transactions=(), iteration_message=message.encode())


def refusal(block: Block, state: LedgerState) -> str:
    with pytest.raises(InvalidBlock) as caught:
        RULE(block, state)
    return caught.value.reason


def claim(block: Block, state: LedgerState) -> WorkClaim:
    """Claim and record it, as applying the block does."""
    made = RULE(block, state)
    assert made is not None
    state.positions[made.key] = made.position
    return made


def test_an_outsider_cannot_mine_a_client_task() -> None:
    state = state_with_a_drawn_task()
    assert refusal(block_of(key("outsider")), state) == "not_drawn"
    # Naming the drawn miner's ticket does not help: it belongs to another key.
    stolen = block_of(key("outsider"), ticket_id=ticket(DRAWN, NodeRole.MINER).ticket_id)
    assert refusal(stolen, state) == "not_drawn"


def test_a_ticket_holder_not_drawn_for_the_task_cannot_mine_it() -> None:
    state = state_with_a_drawn_task()
    assert refusal(block_of(UNDRAWN), state) == "not_drawn"
    other_role = block_of(VERIFIER, ticket_id=ticket(VERIFIER, NodeRole.VERIFIER).ticket_id)
    assert refusal(other_role, state) == "not_drawn"
    assert refusal(block_of(DRAWN, worker_index=1, workers=2), state) == "not_drawn"
    assert RULE(block_of(DRAWN), state) is not None


def test_a_task_is_mined_only_once_drawn_and_while_open() -> None:
    state = state_with_a_drawn_task()
    state.tasks[TASK] = msgspec.structs.replace(state.tasks[TASK], drawn=None)
    assert refusal(block_of(DRAWN), state) == "not_drawn"
    state.tasks[TASK] = msgspec.structs.replace(state.tasks[TASK], status="completed")
    assert refusal(block_of(DRAWN), state) == "unknown_task"
    del state.tasks[TASK]
    assert refusal(block_of(DRAWN), state) == "unknown_task"


def test_a_position_seals_once_and_positions_only_move_forward() -> None:
    state = state_with_a_drawn_task()
    claim(block_of(DRAWN, epoch=1, iteration=3), state)
    assert refusal(block_of(DRAWN, epoch=1, iteration=3), state) == "stale_position"
    assert refusal(block_of(DRAWN, epoch=1, iteration=2), state) == "stale_position"
    assert refusal(block_of(DRAWN, epoch=0, iteration=9), state) == "stale_position"
    claim(block_of(DRAWN, epoch=1, iteration=4), state)


def test_a_segment_keeps_the_checkpoint_its_first_block_committed_to() -> None:
    state = state_with_a_drawn_task()
    first = sha256(b"segment start")
    claim(block_of(DRAWN, epoch=1, iteration=1, checkpoint_hash=first), state)
    other = block_of(DRAWN, epoch=1, iteration=2, checkpoint_hash=sha256(b"another start"))
    assert refusal(other, state) == "segment_fork"
    claim(block_of(DRAWN, epoch=1, iteration=2, checkpoint_hash=first), state)
    interval = PARAMS.checkpoint_interval
    next_segment = block_of(DRAWN, epoch=1, iteration=interval, checkpoint_hash=sha256(b"next"))
    claim(next_segment, state)


def test_the_bootstrap_phase_ends_with_the_first_miner_ticket() -> None:
    bootstrap = bootstrap_task_id(PARAMS)
    assert bootstrap is not None
    state = LedgerState.genesis(PARAMS)
    anyone = msgspec.structs.replace(
        block_of(key("outsider")),
        iteration_message=iteration_message(
            bootstrap, key("outsider").public_key, ticket_id=ZERO_HASH, epoch=0, iteration=0
        ).encode(),
    )
    assert RULE(anyone, state) is not None
    held = ticket(DRAWN, NodeRole.MINER)
    state.tickets[held.ticket_id] = held
    assert refusal(anyone, state) == "not_drawn"
    own = iteration_message(bootstrap, DRAWN.public_key, ticket_id=held.ticket_id)
    staked = msgspec.structs.replace(block_of(DRAWN), iteration_message=own.encode())
    assert RULE(staked, state) is not None
