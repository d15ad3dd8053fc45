"""Blocks are mined only by training, and verifiers re-run the work to check them."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import torch
from tests.mining.conftest import TINY, message_of, with_message

from pouw.bench.mining import MiningRig
from pouw.blockchain.block import Block, sign_block
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.crypto import sha256
from pouw.errors import InvalidBlock
from pouw.mining.budget import derive_nonce, nonce_budget
from pouw.mining.segments import checkpoint_bytes, checkpoint_hash, read_checkpoint
from pouw.mining.verify import BlockVerifier


def reseal(rig: MiningRig, block: Block, **header_changes: object) -> Block:
    """Make the header consistent with the (possibly changed) message, then re-sign.

    The seal is NOT redone: these blocks only need to reach the verifier's checks, which run
    on blocks given to it directly."""
    message = decode_iteration_message(block.iteration_message)
    consistent: dict[str, object] = {
        "iteration_hash": sha256(block.iteration_message),
        "history_commitment": message.commitment(),
        "precursor": message.precursor(),
        "nonce": derive_nonce(message.precursor(), 0),
    }
    header = msgspec.structs.replace(block.header, **{**consistent, **header_changes})
    return sign_block(
        msgspec.structs.replace(block, header=header), rig.miner_key, rig.params.chain_id
    )


def reason(rig: MiningRig, block: Block) -> str:
    with pytest.raises(InvalidBlock) as caught:
        rig.verifier.reexecute(block)
    return caught.value.reason


def test_mined_blocks_are_on_the_chain_and_reexecute(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    assert rig.chain.height == len(blocks)
    assert not rig.rejected
    for block in blocks:
        verification = BlockVerifier(rig.params, rig.task_spec).reexecute(block)  # no vouching
        message = decode_iteration_message(block.iteration_message)
        assert verification.loss == message.loss
        assert rig.chain.is_main(block.hash())


def test_a_block_records_its_iteration_and_device(mined: tuple[MiningRig, list[Block]]) -> None:
    _, blocks = mined
    messages = [decode_iteration_message(block.iteration_message) for block in blocks]
    short = {(m.iteration, m.samples) for m in messages if m.samples != TINY.batch_size}
    # Only an epoch's last batch may be short, and it is the same batch in every epoch.
    assert len(short) <= 1 and all(0 < samples < TINY.batch_size for _, samples in short)
    message = messages[0]
    assert 0.0 < message.loss < 10.0
    assert blocks[0].header.device_class == "cpu"
    assert blocks[0].checkpoint, "verifiers need the start model"


def test_random_update_is_rejected(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    message = decode_iteration_message(blocks[0].iteration_message)
    noise = np.random.default_rng(0).normal(size=len(message.grad_sample) // 4).astype(np.float32)
    block = reseal(rig, with_message(blocks[0], grad_sample=noise.tobytes()))
    assert reason(rig, block) == "update_mismatch"


def test_update_from_another_batch_is_rejected(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    first, second = (decode_iteration_message(b.iteration_message) for b in blocks[:2])
    block = reseal(rig, with_message(blocks[0], grad_sample=second.grad_sample, loss=second.loss))
    assert reason(rig, block) in {"update_mismatch", "loss_mismatch"}
    claimed_other_batch = reseal(rig, with_message(blocks[0], batch_hash=second.batch_hash))
    assert reason(rig, claimed_other_batch) == "batch_mismatch"
    del first


def forged_checkpoint(rig: MiningRig, block: Block, tensors: dict[str, torch.Tensor]) -> Block:
    """`block` re-executing from `tensors`, named by its IT_RES and resealed: a miner's claim
    that its segment started there."""
    forged = with_message(block, checkpoint_hash=checkpoint_hash(tensors))
    return reseal(rig, msgspec.structs.replace(forged, checkpoint=checkpoint_bytes(tensors)))


def nudged(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t + 1e-3 if name.endswith("weight") else t for name, t in tensors.items()}


def test_a_start_model_off_the_trajectory_is_rejected(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    rig, blocks = mined
    first = blocks[0]
    assert message_of(first).iteration < 16
    # Segment 0 starts from the task's initial model, which anyone can rebuild.
    first_tensors = read_checkpoint(first.checkpoint)
    assert reason(rig, forged_checkpoint(rig, first, nudged(first_tensors))) == (
        "checkpoint_mismatch"
    )
    # Later segments start where the miner says; the iteration must follow from that start.
    later = next(b for b in blocks if message_of(b).iteration >= 16)
    later_tensors = read_checkpoint(later.checkpoint)
    assert reason(rig, forged_checkpoint(rig, later, nudged(later_tensors))) == (
        "stale_start_model"
    )


def test_checkpoint_bytes_the_iteration_does_not_name_are_refused(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    rig, blocks = mined
    later = next(b for b in blocks if message_of(b).iteration >= 16)
    swapped = msgspec.structs.replace(later, checkpoint=blocks[0].checkpoint)
    assert reason(rig, swapped) == "checkpoint_bytes"
    rig.verifier.reexecute(later)  # the genuine copy, verified first or after, still holds
    assert reason(rig, swapped) == "checkpoint_bytes"


def test_wrong_loss_or_accuracy_is_rejected(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    message = decode_iteration_message(blocks[0].iteration_message)
    assert (
        reason(rig, reseal(rig, with_message(blocks[0], loss=message.loss * 0.9)))
        == "loss_mismatch"
    )
    wrong_count = (message.correct + 1) % (message.samples + 1)
    assert (
        reason(rig, reseal(rig, with_message(blocks[0], correct=wrong_count)))
        == "accuracy_mismatch"
    )


def test_nonce_not_derived_from_the_precursor_is_rejected(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    rig, blocks = mined
    block = reseal(rig, blocks[0], nonce=12345)
    assert reason(rig, block) == "nonce_not_derived"


def test_more_nonces_than_the_budget_is_rejected(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    message = decode_iteration_message(blocks[0].iteration_message)
    budget = nonce_budget(
        rig.params.omega_b, rig.params.omega_m, TINY.batch_size, 64 * 32 + 32 + 32 * 10 + 10
    )
    block = reseal(rig, blocks[0], nonce=derive_nonce(message.precursor(), budget + 3))
    assert reason(rig, block) == "nonce_over_budget"


def test_a_position_seals_one_block_only(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    replay = rig.chain.assemble_block(rig.miner_key.public_key, rig.miner_key.address, [])
    replay = msgspec.structs.replace(
        replay,
        iteration_message=blocks[0].iteration_message,
        checkpoint=blocks[0].checkpoint,
        header=msgspec.structs.replace(
            replay.header,
            iteration_hash=blocks[0].header.iteration_hash,
            history_commitment=blocks[0].header.history_commitment,
            precursor=blocks[0].header.precursor,
        ),
    )
    from tests.support.placeholder_seal import seal_with_plain_hash

    # The seal rule would refuse a nonce found by plain hashing; take it out to reach the
    # claim rule that catches the second block at one position.
    rules, rig.chain.seal_rules = rig.chain.seal_rules, ()
    try:
        with pytest.raises(InvalidBlock) as caught:
            rig.chain.add_block(seal_with_plain_hash(replay, rig.miner_key, rig.params.chain_id))
    finally:
        rig.chain.seal_rules = rules
    assert caught.value.reason == "stale_position"


def test_plain_hash_seal_is_rejected_by_the_pouw_seal_rule(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    rig, _ = mined
    from tests.support.placeholder_seal import seal_with_plain_hash

    block = rig.chain.assemble_block(rig.miner_key.public_key, rig.miner_key.address, [])
    with pytest.raises(InvalidBlock) as caught:
        rig.chain.add_block(seal_with_plain_hash(block, rig.miner_key, rig.params.chain_id))
    assert caught.value.reason == "malformed_iteration"


def test_corrupted_checkpoint_bytes_are_refused(mined: tuple[MiningRig, list[Block]]) -> None:
    rig, blocks = mined
    blob = bytearray(blocks[0].checkpoint)
    blob[10:20] = b"\xff" * 10
    corrupted = msgspec.structs.replace(blocks[0], checkpoint=bytes(blob))
    assert reason(rig, corrupted) == "checkpoint_bytes"
    not_a_file = msgspec.structs.replace(blocks[0], checkpoint=b"not safetensors")
    assert reason(rig, not_a_file) == "checkpoint_bytes"


def test_a_named_checkpoint_of_another_architecture_is_rejected(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    rig, blocks = mined
    other = dict(torch.nn.Sequential(torch.nn.Linear(64, 10)).state_dict())
    assert reason(rig, forged_checkpoint(rig, blocks[0], other)) == "corrupt_model"


def test_only_the_exact_device_class_is_accepted(mined: tuple[MiningRig, list[Block]]) -> None:
    """A tolerance would let a miner vary its outputs, and so its precursor, for free."""
    rig, blocks = mined
    assert reason(rig, reseal(rig, blocks[0], device_class="cuda")) == "inexact_device"


BASE = IterationMessage(
    task_id=bytes(32), miner=bytes(32), ticket_id=bytes(32), worker_index=0, workers=1,
    epoch=0, iteration=0, checkpoint_hash=bytes(32), batch_hash=bytes(32), loss=1.0, correct=1,
    samples=2, start_sample=b"a", grad_sample=b"b", applied_updates_hash=bytes(32),
    previous_commitment=bytes(32),
)  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {"task_id": b"\x01" * 32},
        {"miner": b"\x01" * 32},
        {"ticket_id": b"\x01" * 32},
        {"worker_index": 1},
        {"workers": 2},
        {"epoch": 1},
        {"iteration": 1},
        {"checkpoint_hash": b"\x01" * 32},
        {"batch_hash": b"\x01" * 32},
        {"loss": 1.5},
        {"correct": 2},
        {"samples": 3},
        {"start_sample": b"c"},
        {"grad_sample": b"c"},
    ],
)
def test_the_precursor_binds_every_checked_field(changes: dict[str, object]) -> None:
    assert msgspec.structs.replace(BASE, **changes).precursor() != BASE.precursor()


@pytest.mark.parametrize(
    "changes",
    [
        {"applied_updates_hash": b"\x01" * 32},
        {"previous_commitment": b"\x01" * 32},
        {"peer_message_ids": (b"\x01" * 32,)},
    ],
)
def test_history_nobody_can_check_buys_no_fresh_nonces(changes: dict[str, object]) -> None:
    assert msgspec.structs.replace(BASE, **changes).precursor() == BASE.precursor()


def test_grinding_one_real_iteration_gets_nothing_past_its_budget(
    mined: tuple[MiningRig, list[Block]],
) -> None:
    """Everything a miner may vary for free (its history for peers, the time, the reward's
    recipient, the transactions) leaves the lottery draws of one iteration where they were:
    its nonce budget, on one parent."""
    rig, blocks = mined
    block = blocks[0]
    message = message_of(block)
    budget = nonce_budget(
        rig.params.omega_b, rig.params.omega_m, TINY.batch_size, 64 * 32 + 32 + 32 * 10 + 10
    )
    draws = set()
    for variant in range(50):
        salt = variant.to_bytes(4, "big")
        ground = msgspec.structs.replace(
            message,
            previous_commitment=sha256(b"history" + salt),
            applied_updates_hash=sha256(b"updates" + salt),
            peer_message_ids=(sha256(salt),),
        )
        for index in range(budget):
            header = msgspec.structs.replace(
                block.header,
                timestamp_ms=block.header.timestamp_ms + variant,
                merkle_root=sha256(b"other transactions" + salt),
                precursor=ground.precursor(),
                nonce=derive_nonce(ground.precursor(), index),
            )
            draws.add(header.seal_hash())
    assert len(draws) == budget
