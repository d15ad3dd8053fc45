"""A small mining rig shared by the mining tests: a chain whose bootstrap task is tiny."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pouw.bench.mining import MiningRig
from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.ml.iteration import configure_determinism
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

TINY = TaskSpec(
    model=ModelSpec(layers=(64, 32, 10)),
    dataset=DatasetSpec(name="digits"),
    batch_size=64,
    learning_rate=0.1,
    epochs=3,
    tau=1e-3,
    miners=1,
)


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> tuple[MiningRig, list[Block]]:
    """A rig that has mined a few real blocks by training."""
    configure_determinism()
    rig = MiningRig(TINY, tmp_path_factory.mktemp("rig"), difficulty=4)
    trainer = rig.trainer(TINY)
    rig.mine_blocks(trainer, 3)
    while not any(message_of(b).iteration >= 16 for b in rig.blocks) and not trainer.finished:
        rig.mine_blocks(trainer, len(rig.blocks) + 1)  # a block past the first segment too
    assert len(rig.blocks) >= 3, f"expected blocks, rejected: {rig.rejected}"
    return rig, rig.blocks


def message_of(block: Block) -> IterationMessage:
    return decode_iteration_message(block.iteration_message)


def with_message(block: Block, **changes: object) -> Block:
    message = msgspec.structs.replace(decode_iteration_message(block.iteration_message), **changes)
    return msgspec.structs.replace(block, iteration_message=message.encode())


def tiny_spec(path: Path) -> TaskSpec:
    del path
    return TINY
