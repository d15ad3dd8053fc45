"""A partition of a running network, and its healing.

Five real PoUWNodes in one process (as examples/multi_node_network.py runs them) on
127.0.0.1: side A is the supervisor (everybody's bootstrap peer) and two miners, side B one
miner and a client. The network's fault-injecting partition (pouw.network.faults) cuts every
link between the sides; each side keeps mining its own branch, and each confirms a transfer
of its own. Mining then stops (so that the heavier branch is known before the heal, not raced
for after it; a tie is broken by letting side A mine on). After the heal every node must
reach the heavier branch's very tip, and no confirmed transaction may be lost: the lighter
branch's transfer goes back to every mempool (Chain reorganisation -> Mempool.readmit, then
gossip) and, once mining resumes, into a new block of the one chain.

In one process rather than a multi-process devnet: one torch import instead of five, no
HTTP polling, and the chain can be read at one instant. The multi-process way in (the
POUW_FAULT_PARTITION_FILE) is covered in tests/network/test_partition_option.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pouw.blockchain.audit import audit_store
from pouw.blockchain.params import devnet_key
from pouw.blockchain.transactions import (
    Reward,
    Transaction,
    Transfer,
    coins,
    encode_transaction,
    sign_transaction,
)
from pouw.mining.claims import ClaimRule
from pouw.network.messages import ItemKind, Verdict
from pouw.node import NodeConfig, PoUWNode
from pouw.roles import NodeRole

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
SIDE_A = {"supervisor": NodeRole.SUPERVISOR, "miner-0": NodeRole.MINER, "miner-1": NodeRole.MINER}
SIDE_B = {"miner-2": NodeRole.MINER, "client": NodeRole.PEER}
FORK_BLOCKS = 6
"""Blocks each side mines on its own branch (at least) before the heal."""


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def p2p_address(node: PoUWNode) -> tuple[str, int]:
    assert node.network is not None
    return (HOST, node.network.port)


def transfer(sender: str, recipient: str, node: PoUWNode) -> Transaction:
    key = devnet_key(sender)  # funded by the devnet genesis, never used by a node
    return sign_transaction(
        key,
        Transfer(recipient=devnet_key(recipient).address, amount=coins(5)),
        nonce=node.chain.state.account(key.address).nonce,
        fee=coins(0.01),
        chain_id=node.params.chain_id,
    )


def holding(node: PoUWNode, txid: bytes, above: int) -> tuple[int, bytes]:
    """(confirmations, block hash) of `txid` in the node's main chain above height `above`;
    (0, b"") when it is not there."""
    chain = node.chain
    for height in range(chain.height, above, -1):
        block = chain.block_at(height)
        if block is not None and any(tx.txid() == txid for tx in block.transactions):
            return chain.height - height + 1, block.hash()
    return 0, b""


def confirmations(node: PoUWNode, txid: bytes, above: int) -> int:
    return holding(node, txid, above)[0]


def user_transactions(node: PoUWNode, above: int) -> set[bytes]:
    """Transactions (not block rewards) in the node's main chain above height `above`."""
    chain = node.chain
    found = set()
    for height in range(above + 1, chain.height + 1):
        block = chain.block_at(height)
        assert block is not None
        found |= {tx.txid() for tx in block.transactions if not isinstance(tx.payload, Reward)}
    return found


def cut(side: Side, other: Side, *, heal: bool = False) -> None:
    others = [p2p_address(node) for node in other.nodes]
    for node in side.nodes:
        assert node.network is not None
        if heal:
            node.network.heal(others)
        else:
            node.network.cut(others)


@dataclass
class Side:
    nodes: list[PoUWNode]
    tx: Transaction
    """The transfer this side confirms while apart."""
    tip: bytes = b""
    work: int = 0
    tx_block: bytes = b""
    """The block that confirmed `tx` on this side."""

    @property
    def miners(self) -> list[PoUWNode]:
        return [node for node in self.nodes if node.role == NodeRole.MINER]

    def confirmed(self, fork: int) -> bool:
        return all(
            confirmations(n, self.tx.txid(), fork) >= 2 and n.chain.height >= fork + FORK_BLOCKS
            for n in self.nodes
        )

    def freeze(self, fork: int) -> set[bytes]:
        """Note the branch as it is at the heal; the transactions it confirmed."""
        chain = self.nodes[0].chain
        self.tip, self.work = chain.tip.hash, chain.tip.total_work
        self.tx_block = holding(self.nodes[0], self.tx.txid(), fork)[1]
        return user_transactions(self.nodes[0], fork)


async def start_network(root: Path, nodes: dict[str, PoUWNode]) -> None:
    """Start the five nodes into `nodes` (so that the caller stops whatever started)."""
    for node_id, role in {**SIDE_A, **SIDE_B}.items():
        bootstrap = [p2p_address(nodes["supervisor"])] if nodes else []
        config = NodeConfig(
            node_id=node_id, role=role, port=0, data_dir=root / node_id, bootstrap_peers=bootstrap
        )
        nodes[node_id] = PoUWNode(node_id, role, config=config)
        await nodes[node_id].start()
    await until(
        lambda: all(n.get_status()["peer_count"] == len(nodes) - 1 for n in nodes.values()),
        30,
        "a full mesh",
    )
    await mine(nodes.values())
    await until(
        lambda: one_tip(nodes.values()) and nodes["supervisor"].chain.height >= 2,
        60,
        "a few blocks on one chain",
    )


async def mine(nodes: Iterable[PoUWNode]) -> None:
    for node in nodes:
        if node.role == NodeRole.MINER:
            await node.start_mining()


async def stop_mining(side: Side) -> None:
    """Stop the side's miners and wait until the side agrees on a tip that stays put."""
    for node in side.miners:
        await node.stop_mining()
    last = b""
    while True:
        await until(lambda: one_tip(side.nodes), 30, "one tip on each side")
        if side.nodes[0].chain.tip.hash == last:
            return
        last = side.nodes[0].chain.tip.hash
        await asyncio.sleep(0.5)  # a block found as the miner stopped may still be on its way


def one_tip(nodes: Iterable[PoUWNode]) -> bool:
    return len({node.chain.tip.hash for node in nodes}) == 1


async def submit(node: PoUWNode, tx: Transaction) -> None:
    result = await node.intake.on_item(ItemKind.TX, tx.txid(), encode_transaction(tx), "gossip")
    assert result.verdict == Verdict.ACCEPTED, result


async def split(a: Side, b: Side) -> int:
    """Cut the sides apart, have each confirm its transfer and stop mining; the fork height."""
    cut(a, b)
    cut(b, a)
    fork = min(n.chain.height for n in (*a.nodes, *b.nodes))
    assert all(
        n.get_status()["peer_count"] < len(side.nodes) for side in (a, b) for n in side.nodes
    )
    await submit(a.miners[0], a.tx)
    await submit(b.miners[0], b.tx)
    await until(lambda: a.confirmed(fork) and b.confirmed(fork), 90, "both sides to mine")
    await stop_mining(a)
    await stop_mining(b)
    tied = b.nodes[0].chain.tip.total_work
    if a.nodes[0].chain.tip.total_work == tied:  # either branch could win: side A mines on
        await mine(a.miners)
        await until(lambda: a.nodes[0].chain.tip.total_work > tied, 30, "A to break the tie")
        await stop_mining(a)
    return fork


def test_a_partitioned_network_heals_onto_the_heavier_branch_and_loses_no_transaction(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        nodes: dict[str, PoUWNode] = {}
        try:
            await start_network(tmp_path, nodes)
            a = Side([nodes[n] for n in SIDE_A], transfer("faucet", "client", nodes["miner-0"]))
            b = Side([nodes[n] for n in SIDE_B], transfer("peer", "supervisor", nodes["miner-2"]))
            fork = await split(a, b)
            confirmed = a.freeze(fork) | b.freeze(fork)
            assert a.tip != b.tip and {a.tx.txid(), b.tx.txid()} <= confirmed
            assert confirmations(a.nodes[0], b.tx.txid(), fork) == 0  # apart, really
            assert confirmations(b.nodes[0], a.tx.txid(), fork) == 0
            heavier, lighter = (a, b) if a.work > b.work else (b, a)

            cut(a, b, heal=True)
            cut(b, a, heal=True)
            everyone = nodes.values()
            await until(
                lambda: all(
                    n.chain.tip.hash == heavier.tip
                    and n.get_status()["peer_count"] == len(nodes) - 1
                    for n in everyone
                ),
                60,
                "a full mesh again, every node on the heavier branch's tip",
            )
            # The lighter branch's transfer is back in the mempool of its own side at once
            # (readmitted on the reorg), then of everyone (gossip).
            assert all(lighter.tx.txid() in n.mempool for n in lighter.nodes)
            await until(
                lambda: all(lighter.tx.txid() in n.mempool for n in everyone),
                30,
                "the readmitted transfer to reach every mempool",
            )
            assert heavier.tx.txid() not in nodes["supervisor"].mempool

            await mine(everyone)
            await until(
                lambda: (
                    one_tip(everyone)
                    and all(confirmations(n, lighter.tx.txid(), fork) >= 1 for n in everyone)
                ),
                60,
                "the readmitted transfer to be mined again",
            )
            final = nodes["supervisor"]
            assert final.chain.is_main(heavier.tip) and not final.chain.is_main(lighter.tip)
            assert confirmed <= user_transactions(final, fork)  # nothing confirmed is lost
            assert holding(final, heavier.tx.txid(), fork)[1] == heavier.tx_block
            assert holding(final, lighter.tx.txid(), fork)[1] not in (b"", lighter.tx_block)
        finally:
            for node in reversed(list(nodes.values())):
                await node.stop()
        for node_id in nodes:
            report = audit_store(tmp_path / node_id, claim_rule=ClaimRule())
            assert report.ok, (node_id, report.describe())

    asyncio.run(asyncio.wait_for(scenario(), timeout=240))
