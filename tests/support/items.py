"""A well-formed iteration message for tests that need one, not one a miner computed."""

from __future__ import annotations

from typing import Any

import msgspec

from pouw.blockchain.iteration_message import IterationMessage
from pouw.crypto import sha256


def iteration_message(task_id: bytes, miner: bytes, **changes: Any) -> IterationMessage:
    message = IterationMessage(
        task_id=task_id,
        miner=miner,
        ticket_id=sha256(b"ticket"),
        worker_index=0,
        workers=1,
        epoch=2,
        iteration=7,
        checkpoint_hash=sha256(b"checkpoint"),
        batch_hash=sha256(b"batch"),
        loss=0.6931,
        correct=40,
        samples=64,
        start_sample=bytes(64),
        grad_sample=bytes(range(64)),
        applied_updates_hash=sha256(b""),
        previous_commitment=sha256(b"previous"),
        peer_message_ids=(sha256(b"peer"),),
    )
    return msgspec.structs.replace(message, **changes)
