"""Chain validation, fork choice and reorgs."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from tests.support.ledger import (
    ALICE,
    BOB,
    CAROL,
    FAR_FUTURE_MS,
    MINER,
    ledger_params,
    make_block,
    mine,
    open_chain,
    resign,
    transfer,
)
from tests.support.placeholder_seal import unsealable

from pouw.blockchain.block import Block, encode_block, sign_block
from pouw.blockchain.chain import AddStatus, Chain, deep_reorg_allowed
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.transactions import Transaction, reward_transaction
from pouw.blockchain.validation import check_header_in_context
from pouw.crypto import sha256
from pouw.errors import InvalidBlock, ReorgTooDeep


def rejection(chain: Chain, block: Block) -> InvalidBlock:
    with pytest.raises(InvalidBlock) as caught:
        chain.add_block(block)
    return caught.value


def test_extending_the_tip_applies_transactions(chain: Chain) -> None:
    before = chain.state.balance(BOB.address)
    update = mine(chain, [transfer(ALICE, BOB, 500, nonce=0, fee=7)])
    assert update.status is AddStatus.EXTENDED
    assert chain.height == 1
    assert chain.state.balance(BOB.address) == before + 500
    assert chain.state.balance(MINER.address) == 1_000_000_000 + chain.params.block_reward + 7


def test_block_with_an_invalid_transaction_is_rejected_and_changes_nothing(chain: Chain) -> None:
    good = transfer(ALICE, BOB, 1, nonce=0)
    replayed = transfer(ALICE, BOB, 1, nonce=0, fee=11)
    snapshot = chain.state.snapshot()
    error = rejection(chain, make_block(chain, [good, replayed]))
    assert error.reason == "replay"
    assert chain.height == 0
    assert chain.state.snapshot() == snapshot


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: resign(b, merkle_root=sha256(b"other")), "bad_merkle_root"),
        (lambda b: resign(b, iteration_hash=sha256(b"other")), "bad_iteration_hash"),
        (lambda b: resign(b, difficulty=b.header.difficulty + 1), "wrong_difficulty"),
        (lambda b: resign(b, timestamp_ms=1), "timestamp_out_of_bounds"),
        (lambda b: resign(b, timestamp_ms=FAR_FUTURE_MS + 60_000), "timestamp_out_of_bounds"),
        (lambda b: resign(b, height=5), "wrong_height"),
        (lambda b: msgspec.structs.replace(b, signature=bytes(64)), "bad_block_signature"),
        (lambda b: sign_block(b, ALICE, "pouw-devnet"), "bad_block_signature"),
        (lambda b: unsealable(b, MINER, "pouw-devnet"), "target_not_met"),
    ],
)
def test_block_rules_name_their_reason(chain: Chain, mutate: object, reason: str) -> None:
    block = mutate(make_block(chain))  # type: ignore[operator]
    assert rejection(chain, block).reason == reason
    assert chain.height == 0


def test_reward_must_match_block_reward_plus_fees(chain: Chain) -> None:
    block = make_block(chain, [transfer(ALICE, BOB, 1, nonce=0, fee=5)])
    greedy = reward_transaction(MINER.address, chain.params.block_reward + 6, 1)
    txs = (greedy, *block.transactions[1:])
    from pouw.blockchain.block import merkle_root

    root = merkle_root([tx.txid() for tx in txs])
    block = resign(msgspec.structs.replace(block, transactions=txs), merkle_root=root)
    assert rejection(chain, block).reason == "bad_reward"


def test_block_without_reward_is_rejected(chain: Chain) -> None:
    block = make_block(chain, [transfer(ALICE, BOB, 1, nonce=0)])
    txs = block.transactions[1:]
    from pouw.blockchain.block import merkle_root

    block = resign(
        msgspec.structs.replace(block, transactions=txs),
        merkle_root=merkle_root([tx.txid() for tx in txs]),
    )
    assert rejection(chain, block).reason == "missing_reward"


def test_oversized_block_is_rejected(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params(max_block_bytes=2_000))
    txs = [transfer(ALICE, BOB, 1, nonce=n) for n in range(20)]
    block = make_block(chain, txs)
    assert len(encode_block(block)) > 2_000
    assert rejection(chain, block).reason == "oversized_block"


def test_wrong_previous_hash_is_rejected_by_the_header_rule(chain: Chain) -> None:
    mine(chain)
    child = make_block(chain)
    genesis_header = chain.block_at(0).header  # type: ignore[union-attr]
    with pytest.raises(InvalidBlock) as caught:
        check_header_in_context(child.header, [genesis_header], chain.params, FAR_FUTURE_MS)
    assert caught.value.reason == "wrong_prev_hash"


def test_block_with_unknown_parent_is_an_orphan_and_not_stored(chain: Chain) -> None:
    block = resign(make_block(chain), prev_hash=sha256(b"nowhere"))
    assert chain.add_block(block).status is AddStatus.ORPHAN
    assert not chain.contains(block.hash())


def test_duplicate_block_is_reported(chain: Chain) -> None:
    block = make_block(chain)
    chain.add_block(block)
    assert chain.add_block(block).status is AddStatus.DUPLICATE


def test_lighter_side_branch_is_stored_without_switching(chain: Chain) -> None:
    mine(chain)
    mine(chain)
    side = make_block(chain, parent=chain.hash_at(1), spacing_ms=2_500)
    update = chain.add_block(side)
    assert update.status is AddStatus.SIDE_BRANCH
    assert chain.contains(side.hash())
    assert chain.height == 2 and chain.tip.hash != side.hash()


def build_fork(
    chain: Chain, fork_at: int, length: int, txs_first: list[Transaction] | None = None
) -> list[Block]:
    blocks = []
    parent = chain.hash_at(fork_at)
    for i in range(length):
        block = make_block(
            chain, txs_first if i == 0 and txs_first else [], parent=parent, spacing_ms=1_000
        )
        chain.add_block(block)
        blocks.append(block)
        parent = block.hash()
    return blocks


def test_heavier_branch_wins_and_state_matches_a_replay(tmp_path: Path, chain: Chain) -> None:
    mine(chain, [transfer(ALICE, BOB, 100, nonce=0)])
    mine(chain, [transfer(ALICE, BOB, 100, nonce=1)])
    fork = build_fork(chain, fork_at=0, length=3, txs_first=[transfer(ALICE, CAROL, 50, nonce=0)])
    assert chain.tip.hash == fork[-1].hash()
    assert chain.height == 3

    replay = open_chain(tmp_path / "replay", chain.params)
    for block in fork:
        assert replay.add_block(block).status is AddStatus.EXTENDED
    assert chain.state.snapshot() == replay.state.snapshot()


def test_double_spend_across_a_fork_keeps_only_the_winning_spend(chain: Chain) -> None:
    to_bob = transfer(ALICE, BOB, 1_000, nonce=0)
    to_carol = transfer(ALICE, CAROL, 1_000, nonce=0)
    bob_before, carol_before = chain.state.balance(BOB.address), chain.state.balance(CAROL.address)
    mempool = Mempool()
    main = make_block(chain, [to_bob])
    chain.add_block(main)
    assert chain.state.balance(BOB.address) == bob_before + 1_000

    fork = make_block(chain, [to_carol], parent=chain.genesis_hash, spacing_ms=2_001)
    chain.add_block(fork)
    update = chain.add_block(make_block(chain, parent=fork.hash()))
    assert update.status is AddStatus.REORGANIZED
    assert [b.hash() for b in update.disconnected] == [main.hash()]
    assert chain.state.balance(BOB.address) == bob_before
    assert chain.state.balance(CAROL.address) == carol_before + 1_000

    mempool.readmit(update.disconnected, chain.state)
    assert len(mempool) == 0, "the losing spend is a replay on the winning chain"
    error = rejection(chain, make_block(chain, [to_bob]))
    assert error.reason == "replay"


def test_reorg_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params(max_reorg_depth=2))
    for _ in range(3):
        mine(chain)
    tip = chain.tip.hash
    snapshot = chain.state.snapshot()
    refused = add_even_fork(chain, 4)[-1]
    assert isinstance(refused, ReorgTooDeep)
    assert refused.depth == 3
    assert chain.tip.hash == tip
    assert chain.state.snapshot() == snapshot


def add_even_fork(chain: Chain, length: int) -> list[Block | ReorgTooDeep]:
    """A branch from genesis by another miner at the block time (so at the main chain's
    difficulty): each block added, or the refusal it met."""
    outcomes: list[Block | ReorgTooDeep] = []
    parent = chain.genesis_hash
    for _ in range(length):
        block = make_block(chain, parent=parent, miner=BOB)
        assert block.header.difficulty == chain.tip.header.difficulty
        try:
            chain.add_block(block)
            outcomes.append(block)
        except ReorgTooDeep as refused:
            outcomes.append(refused)
        parent = block.hash()
    return outcomes


def test_a_reorg_past_the_limit_is_taken_once_the_branch_doubles_the_work_since_the_fork(
    tmp_path: Path,
) -> None:
    chain = open_chain(tmp_path, ledger_params(max_reorg_depth=2))
    for _ in range(3):
        mine(chain)
    outcomes = add_even_fork(chain, 6)
    refused = [o.depth for o in outcomes if isinstance(o, ReorgTooDeep)]
    assert refused == [3, 3], "4 and 5 blocks against 3 fall short of twice the work"
    last = outcomes[-1]
    assert isinstance(last, Block)
    assert chain.tip.hash == last.hash() and chain.height == 6
    replay = open_chain(tmp_path / "replay", chain.params)
    for height in range(1, 7):
        stored = chain.block_at(height)
        assert stored is not None
        replay.add_block(stored)
    assert chain.state.snapshot() == replay.state.snapshot()


def test_a_reorg_past_the_limit_short_of_the_work_factor_stays_refused(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params(max_reorg_depth=2, deep_reorg_work_percent=300))
    for _ in range(3):
        mine(chain)
    tip = chain.tip.hash
    outcomes = add_even_fork(chain, 9)
    refused = [o.depth for o in outcomes if isinstance(o, ReorgTooDeep)]
    assert refused == [3] * 5, "4 to 8 blocks against 3 fall short of three times the work"
    assert chain.hash_at(3) != tip and chain.height == 9, "9 against 3 is three times"


@pytest.mark.parametrize(
    ("fork", "main", "branch", "percent", "taken"),
    [
        (10, 20, 30, 200, True),
        (10, 20, 29, 200, False),
        (0, 7, 14, 200, True),
        (0, 7, 13, 200, False),
        (5, 6, 7, 100, True),
    ],
)
def test_deep_reorg_rule_counts_work_from_the_fork(
    fork: int, main: int, branch: int, percent: int, taken: bool
) -> None:
    assert deep_reorg_allowed(fork, main, branch, percent) is taken


def test_branch_with_an_invalid_block_is_dropped_and_the_old_chain_restored(chain: Chain) -> None:
    mine(chain, [transfer(ALICE, BOB, 10, nonce=0)])
    snapshot, tip = chain.state.snapshot(), chain.tip.hash
    overspend = transfer(CAROL, BOB, 10**15, nonce=0)
    bad = make_block(chain, [overspend], parent=chain.genesis_hash, spacing_ms=2_001)
    assert chain.add_block(bad).status is AddStatus.SIDE_BRANCH
    heavier = make_block(chain, parent=bad.hash())
    error = rejection(chain, heavier)
    assert error.reason == "overspend"
    assert chain.tip.hash == tip
    assert chain.state.snapshot() == snapshot
    assert not chain.contains(bad.hash()) and not chain.contains(heavier.hash())


def test_reopened_chain_has_the_same_tip_and_state(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params())
    mine(chain, [transfer(ALICE, BOB, 10, nonce=0)])
    build_fork(chain, fork_at=0, length=2, txs_first=[transfer(ALICE, CAROL, 10, nonce=0)])
    chain.store.close()
    reopened = open_chain(tmp_path)
    assert reopened.tip.hash == chain.tip.hash
    assert reopened.main_hashes() == chain.main_hashes()
    assert reopened.state.snapshot() == chain.state.snapshot()
    mine(reopened)
    assert reopened.height == chain.height + 1


def test_difficulty_retargets_toward_the_block_time(chain: Chain) -> None:
    start = chain.next_difficulty()
    for _ in range(8):
        mine(chain, spacing_ms=chain.params.block_time_ms // 4)
    peak = chain.next_difficulty()
    assert peak > start
    for _ in range(4):
        mine(chain, spacing_ms=chain.params.block_time_ms * 4)
    assert chain.next_difficulty() < peak


def test_reorg_across_stored_tickets_and_tasks_reopens_exactly(tmp_path: Path) -> None:
    from tests.support.ledger import signed

    from pouw.blockchain.transactions import BuyTicket, PayForTask
    from pouw.roles import NodeRole

    chain = open_chain(tmp_path, ledger_params())
    stake = signed(ALICE, BuyTicket(role=NodeRole.MINER, amount=chain.params.min_stake), 0)
    spec = chain.params.bootstrap_task
    assert spec is not None
    pay = signed(BOB, PayForTask(spec=spec, reward=1_000), 0)
    mine(chain, [stake, pay])
    assert stake.txid() in chain.state.tickets and pay.txid() in chain.state.tasks
    build_fork(chain, fork_at=0, length=2)
    assert stake.txid() not in chain.state.tickets and pay.txid() not in chain.state.tasks
    chain.store.close()
    reopened = open_chain(tmp_path)
    assert reopened.state.snapshot() == chain.state.snapshot()


def test_a_batch_stores_its_blocks_and_an_invalid_one_keeps_those_before_it(
    tmp_path: Path,
) -> None:
    chain = open_chain(tmp_path, ledger_params())
    with pytest.raises(InvalidBlock), chain.batch():
        mine(chain, [transfer(ALICE, BOB, 10, nonce=0)])
        mine(chain)
        mine(chain)
        chain.add_block(make_block(chain, [transfer(ALICE, BOB, 10, nonce=0, fee=3)]))
    assert chain.height == 3
    chain.store.close()
    reopened = open_chain(tmp_path)
    assert reopened.main_hashes() == chain.main_hashes()
    assert reopened.state.snapshot() == chain.state.snapshot()


def test_a_reorg_inside_a_batch_reopens_exactly(tmp_path: Path) -> None:
    chain = open_chain(tmp_path, ledger_params())
    with chain.batch():
        mine(chain, [transfer(ALICE, BOB, 10, nonce=0)])
        build_fork(chain, fork_at=0, length=2, txs_first=[transfer(ALICE, CAROL, 10, nonce=0)])
    chain.store.close()
    reopened = open_chain(tmp_path)
    assert reopened.tip.hash == chain.tip.hash
    assert reopened.state.snapshot() == chain.state.snapshot()
