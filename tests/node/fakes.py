"""Fakes for the node's roles: a ledger over an in-memory LedgerState (no SQLite), an
announcer that records what it would gossip (no ZeroMQ), and the real context, events and
task book around them. Each role is built on these exactly as node.py builds it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from tests.support.items import iteration_message

from pouw.blockchain.block import Block, BlockHeader
from pouw.blockchain.chain import AddStatus, ChainUpdate
from pouw.blockchain.draw import TaskDraw, Ticket
from pouw.blockchain.iteration_message import IterationMessage
from pouw.blockchain.params import ChainParams, devnet_key, devnet_params
from pouw.blockchain.settlement import TaskRecord, task_deadline
from pouw.blockchain.state import LedgerState
from pouw.blockchain.transactions import COIN, Payload, Transaction, sign_transaction
from pouw.config import NodeConfig
from pouw.crypto import KeyPair, sha256
from pouw.economics.reputation import Reputation
from pouw.economics.selection import TaskAssignment
from pouw.errors import InvalidBlock, InvalidTransaction
from pouw.monitoring.metrics import NodeMetrics
from pouw.network.messages import ItemKind
from pouw.node.context import Background, Counters, NodeContext
from pouw.node.events import NodeEvents
from pouw.node.items import IterationRecord
from pouw.node.tasks import TaskBook
from pouw.roles import NodeRole
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

PARAMS: ChainParams = devnet_params(("node", "m0", "m1", "m2", "m3"), balance=1000 * COIN)
IRIS = TaskSpec(
    model=ModelSpec(layers=(4, 8, 3)), dataset=DatasetSpec(name="iris"), epochs=4, miners=3
)


def key(name: str) -> KeyPair:
    return devnet_key(name)


def ticket(owner: KeyPair, role: NodeRole, number: int = 0) -> Ticket:
    ticket_id = sha256(owner.public_key + role.value.encode() + bytes([number]))
    return Ticket(ticket_id, owner.address, owner.public_key, role, 10 * COIN, 0)


def task(task_id: bytes, spec: TaskSpec = IRIS, height: int = 1) -> TaskRecord:
    deadline = task_deadline(PARAMS, height)
    return TaskRecord(task_id, key("client").address, spec, 100 * COIN, height, deadline=deadline)


@dataclass
class FakeChain:
    state: LedgerState
    height: int = 0
    blocks: dict[bytes, Block] = field(default_factory=dict)
    """The blocks the node knows, by hash (none unless a test adds them)."""

    def block(self, block_hash: bytes) -> Block | None:
        return self.blocks.get(block_hash)


@dataclass
class FakeSeal:
    """Re-execution that fails with `failure` for the blocks in `bad` (the verifier's)."""

    bad: dict[bytes, InvalidBlock] = field(default_factory=dict)
    reexecuted: list[bytes] = field(default_factory=list)
    vouched: list[bytes] = field(default_factory=list)

    def vouch(self, block: Block) -> None:
        self.vouched.append(block.hash())

    def reexecute(self, block: Block) -> None:
        self.reexecuted.append(block.hash())
        failure = self.bad.get(block.hash())
        if failure is not None:
            raise failure


@dataclass
class FakeMempool:
    pending: list[Transaction] = field(default_factory=list)

    def transactions(self) -> list[Transaction]:
        return list(self.pending)

    def __contains__(self, txid: object) -> bool:
        return any(tx.txid() == txid for tx in self.pending)

    def clear(self) -> None:
        self.pending.clear()


class FakeLedger:
    def __init__(self, params: ChainParams = PARAMS) -> None:
        self.chain = FakeChain(LedgerState.genesis(params))
        self.mempool = FakeMempool()
        self.seal = FakeSeal()
        self.template: Block | None = None
        self.draws: dict[bytes, TaskAssignment] = {}
        self.submitted: list[Payload] = []
        self.refuse: InvalidTransaction | None = None
        self.refused: list[Payload] = []
        self.accepted: list[Block] = []
        self.reject: InvalidBlock | None = None
        self.templates = 0

    @property
    def state(self) -> LedgerState:
        return self.chain.state

    def add_task(self, record: TaskRecord, assignment: TaskAssignment) -> None:
        """The task on chain, drawn as `assignment` says."""
        drawn = TaskDraw(
            sha256(record.task_id),
            record.height + 1,
            tuple(assignment.miners),
            tuple(assignment.supervisors),
            tuple(assignment.verifiers),
            tuple(assignment.evaluators),
        )
        self.state.tasks[record.task_id] = msgspec.structs.replace(record, drawn=drawn)
        self.draws[record.task_id] = assignment
        for drawn in (
            *assignment.miners,
            *assignment.supervisors,
            *assignment.verifiers,
            *assignment.evaluators,
        ):
            self.state.tickets[drawn.ticket_id] = drawn

    def draw(self, record: TaskRecord) -> TaskAssignment | None:
        return self.draws.get(record.task_id)

    def submit(self, payload: Payload, fee: float = 0.01) -> Transaction:
        """Signed by the node's key at its next nonce and kept in `mempool`."""
        if self.refuse is not None:
            self.refused.append(payload)
            raise self.refuse
        tx = sign_transaction(
            key("node"), payload, nonce=len(self.submitted), fee=0, chain_id=PARAMS.chain_id
        )
        self.submitted.append(payload)
        self.mempool.pending.append(tx)
        return tx

    def accept_block(self, block: Block, encoded: bytes | None = None) -> ChainUpdate:
        if self.reject is not None:
            raise self.reject
        self.accepted.append(block)
        return ChainUpdate(AddStatus.EXTENDED, [block], [])

    def refresh_template(self) -> None:
        self.templates += 1


@dataclass
class FakeAnnouncer:
    announced: list[tuple[ItemKind, bytes, bytes]] = field(default_factory=list)
    remembered: set[tuple[ItemKind, bytes]] = field(default_factory=set)

    def announce(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        self.announced.append((kind, item_id, payload))

    def remember(self, kind: ItemKind, item_id: bytes, payload: bytes) -> None:
        self.remembered.add((kind, item_id))

    def knows(self, kind: ItemKind, item_id: bytes) -> bool:
        return (kind, item_id) in self.remembered

    def kinds(self) -> list[ItemKind]:
        return [kind for kind, _, _ in self.announced]


def context(data_dir: Path, name: str = "node", role: NodeRole = NodeRole.PEER) -> NodeContext:
    metrics = NodeMetrics()
    return NodeContext(
        node_id=name,
        role=role,
        config=NodeConfig(node_id=name, role=role, data_dir=data_dir),
        params=PARAMS,
        key=key(name),
        metrics=metrics,
        counters=Counters(metrics),
        reputation=Reputation(),
        tasks=TaskBook(data_dir / "models"),
        events=NodeEvents(),
        background=Background(),
    )


def assignment(
    miners: Sequence[KeyPair],
    *,
    supervisors: Sequence[KeyPair] = (),
    verifiers: Sequence[KeyPair] = (),
    evaluators: Sequence[KeyPair] = (),
) -> TaskAssignment:
    return TaskAssignment(
        miners=[ticket(k, NodeRole.MINER) for k in miners],
        supervisors=[ticket(k, NodeRole.SUPERVISOR) for k in supervisors],
        verifiers=[ticket(k, NodeRole.VERIFIER) for k in verifiers],
        evaluators=[ticket(k, NodeRole.EVALUATOR) for k in evaluators],
    )


def record(message: IterationMessage, update: bytes = b"") -> IterationRecord:
    return IterationRecord(message.encode(), update, b"\x01" * 64)


def block(miner: KeyPair, message: IterationMessage | None = None, height: int = 5) -> Block:
    """A block whose header names `miner` and carries `message` (not sealed: the fakes do not
    check seals)."""
    payload = message.encode() if message is not None else b""
    header = BlockHeader(
        version=1,
        height=height,
        prev_hash=sha256(b"parent"),
        merkle_root=sha256(b"root"),
        timestamp_ms=1_000,
        difficulty=1,
        nonce=height,
        miner=miner.public_key,
        iteration_hash=sha256(payload),
        history_commitment=sha256(b"history"),
        precursor=sha256(b"precursor"),
    )
    return Block(header, (), payload)


def message_of(miner: KeyPair, task_id: bytes, **changes: object) -> IterationMessage:
    return iteration_message(task_id, miner.public_key, **changes)
