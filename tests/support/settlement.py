"""A chain with one client task drawn: two miners, four evaluator tickets (three seats), a
verifier, a supervisor; for settlement tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pouw.blockchain.chain import Chain
from pouw.blockchain.draw import TaskDraw
from pouw.blockchain.params import devnet_key, devnet_params
from pouw.blockchain.settlement import TaskRecord
from pouw.blockchain.transactions import (
    COIN,
    BuyTicket,
    PayForTask,
    Payload,
    RankedModel,
    Transaction,
    final_model_body,
)
from pouw.crypto import KeyPair, SignedKind, sha256
from pouw.errors import InvalidTransaction
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec
from tests.support.ledger import mine, open_chain, signed

NAMES = ("client", "m0", "m1", "e0", "e1", "e2", "e3", "v0", "s0", "outsider")
CLIENT, M0, M1, E0, E1, E2, E3, V0, S0, OUTSIDER = (devnet_key(name) for name in NAMES)
SPEC = TaskSpec(model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), miners=2)
ESCROW = 100 * COIN
DEADLINE_BLOCKS = 8
TASK_ID = signed(CLIENT, PayForTask(SPEC, ESCROW), 0).txid()
CHAIN_ID = devnet_params().chain_id


class Ledger:
    """A chain with the task paid at height 2 and drawn at height 3 (draw_delay 1), and each
    key's next nonce."""

    def __init__(self, tmp_path: Path) -> None:
        params = devnet_params(
            NAMES,
            balance=1000 * COIN,
            initial_difficulty=4,
            draw_delay=1,
            task_deadline_blocks=DEADLINE_BLOCKS,
            settlement_blocks=2,
        )
        self.chain: Chain = open_chain(tmp_path, params)
        self.nonces: dict[str, int] = {}
        tickets = [self.tx(k, BuyTicket(NodeRole.MINER, COIN)) for k in (M0, M1)]
        tickets += [self.tx(k, BuyTicket(NodeRole.EVALUATOR, COIN)) for k in (E0, E1, E2, E3)]
        tickets.append(self.tx(V0, BuyTicket(NodeRole.VERIFIER, COIN)))
        tickets.append(self.tx(S0, BuyTicket(NodeRole.SUPERVISOR, COIN)))
        mine(self.chain, tickets)
        pay = self.tx(CLIENT, PayForTask(SPEC, ESCROW))
        mine(self.chain, [pay])
        self.task_id = pay.txid()
        assert self.task_id == TASK_ID
        mine(self.chain)

    def tx(self, key: KeyPair, payload: Payload) -> Transaction:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        return signed(key, payload, nonce)

    @property
    def record(self) -> TaskRecord:
        return self.chain.state.tasks[self.task_id]

    @property
    def drawn(self) -> TaskDraw:
        assert self.record.drawn is not None
        return self.record.drawn

    def evaluators(self) -> list[KeyPair]:
        seated = {t.owner for t in self.drawn.evaluators}
        return [k for k in (E0, E1, E2, E3) if k.address in seated]

    def refusal(self, key: KeyPair, payload: Payload) -> str:
        with pytest.raises(InvalidTransaction) as refused:
            self.chain.state.check_payload(payload, key.address)
        return refused.value.reason

    def balance(self, key: KeyPair) -> int:
        return self.chain.state.balance(key.address)


def ranked(
    task_id: bytes, miner: KeyPair, accuracy: float, chain_id: str = CHAIN_ID
) -> RankedModel:
    """`miner`'s final model of the task, signed by it as its FinalModel item is."""
    model_hash, bytes_hash = sha256(miner.public_key), sha256(b"bytes of " + miner.public_key)
    body = final_model_body(task_id, miner.public_key, model_hash, bytes_hash)
    signature = miner.sign_as(SignedKind.FINAL_MODEL, chain_id, body)
    return RankedModel(miner.address, model_hash, accuracy, bytes_hash, signature)


def ranking(*entries: tuple[KeyPair, float]) -> tuple[RankedModel, ...]:
    return tuple(ranked(TASK_ID, key, accuracy) for key, accuracy in entries)


BEST_M0 = ranking((M0, 0.9), (M1, 0.8))
BEST_M1 = ranking((M1, 0.9), (M0, 0.8))
