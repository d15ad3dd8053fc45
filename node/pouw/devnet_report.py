"""What a devnet's summary says beyond the task: whether its nodes converged, what the
network made of its attackers, what each node's store holds; and how many nodes this machine
runs well.

`tips_agree` is read from the nodes' statuses while they run (every node reports the same tip
in one poll); `orphan_rate` from their stores once they stopped: the blocks each node stored
that are not on the final main chain (the heaviest node's), over every block stored, summed
over the nodes. A node that mined alone on its own branch stores its blocks and few others'; a
node that follows the network stores every branch it heard of: both count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pouw.blockchain.store import ChainStore

NODES_PER_CORE = 4
"""Devnet nodes one core runs well (measured on 2 cores, docs/protocol.md section 7.8):
each node trains in a thread beside its network loop, so more nodes per core starve the
loops that relay and import blocks."""
BLOCK_TIME_PER_NODE_PER_CORE_MS = 1_000
"""The devnet's block time grows with the nodes each core carries (`devnet_block_time_ms`)."""
MIN_BLOCK_TIME_MS = 1_000


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def suggested_max_nodes(cores: int) -> int:
    return max(5, NODES_PER_CORE * cores)


def capacity_warning(nodes: int, cores: int) -> str | None:
    """One line when `nodes` is more than `cores` run well, else None."""
    most = suggested_max_nodes(cores)
    if nodes <= most:
        return None
    return (
        f"warning: {nodes} nodes on {cores} CPU cores is more than this machine runs well"
        f" (at most {most}, {NODES_PER_CORE} a core): blocks will propagate slowly, so the"
        " devnet runs with a longer block time and takes longer"
    )


def devnet_block_time_ms(nodes: int, cores: int) -> int:
    """The block time a devnet of `nodes` on `cores` runs with: propagation slows with the
    nodes each core carries, so blocks come less often, to keep the orphan rate low. Past
    NODES_PER_CORE the loops that relay blocks starve, so each node a core carries beyond it
    slows blocks half as much again (16 nodes on 2 cores: 12 s; at 8 s, 12.5% and 23% of the
    blocks stored were orphans in two runs)."""
    load = nodes / max(1, cores)
    overload = max(0.0, load - NODES_PER_CORE) / NODES_PER_CORE
    block_time = BLOCK_TIME_PER_NODE_PER_CORE_MS * load * (1 + overload / 2)
    return max(MIN_BLOCK_TIME_MS, round(block_time))


def tips_agree(statuses: Mapping[str, Mapping[str, Any]], everyone: int) -> bool:
    """Every node answered and all report one tip."""
    tips = {status.get("tip") for status in statuses.values()}
    return len(statuses) == everyone and len(tips) == 1 and None not in tips


def chain_census(root: Path, node_ids: Iterable[str]) -> dict[str, Any]:
    """`orphan_rate`, blocks stored over all nodes and the final main chain's height, from the
    stopped nodes' stores."""
    stored: dict[str, set[bytes]] = {}
    heaviest: tuple[int, list[bytes]] = (-1, [])
    for node_id in node_ids:
        try:
            store = ChainStore(root / node_id, read_only=True)
        except FileNotFoundError:
            continue
        try:
            blocks = list(store.stored_blocks())
            main = store.main_chain()
        finally:
            store.close()
        stored[node_id] = {block.hash for block in blocks}
        work = {block.hash: block.total_work for block in blocks}
        if main and work.get(main[-1], -1) > heaviest[0]:
            heaviest = (work[main[-1]], main)
    final = set(heaviest[1])
    total = sum(len(hashes) for hashes in stored.values())
    orphans = sum(len(hashes - final) for hashes in stored.values())
    return {
        "orphan_rate": round(orphans / total, 3) if total else 0.0,
        "stored_blocks": total,
        "final_height": len(heaviest[1]) - 1,
    }


def security_summary(
    stakes: Mapping[str, float],
    miners: Iterable[str],
    statuses: Mapping[str, Mapping[str, Any]],
    task: Mapping[str, Any] | None,
    economics: Mapping[str, Mapping[str, Any]],
    *,
    staked: bool,
) -> dict[str, Any]:
    """Detections (by kind, the most any one node counted), stake lost to slashing (none
    before every ticket was `staked` on chain), and each miner's reputation: the
    lowest that a node checking its work (supervisor, verifier, evaluator) gives it."""
    detected: dict[str, int] = {}
    for status in statuses.values():
        for kind, count in status.get("stats", {}).get("attacks_detected", {}).items():
            detected[kind] = max(detected.get(kind, 0), count)
    slashed = {
        node_id: round(stakes[node_id] - e["stake_amount"], 6)
        for node_id, e in economics.items()
        if staked and e["stake_amount"] < stakes[node_id]
    }
    views = [
        economics.get(node_id, {}).get("peer_reputation", {})
        for node_id in ("supervisor", "verifier", "evaluator")
    ]
    reputation = {
        node_id: round(min(view.get(address, 0.5) for view in views), 3)
        for node_id in miners
        if (address := statuses.get(node_id, {}).get("address"))
    }
    names = {status.get("address"): node_id for node_id, status in statuses.items()}
    ranked = [names.get(a, a) for a in (task or {}).get("ranking", [])]
    return {
        "attacks_detected": detected,
        "slashed_stake": slashed,
        "reputation": reputation,
        "ranked": ranked,
    }


def verify_data_dirs(root: Path, node_ids: Iterable[str]) -> dict[str, str]:
    """`pouw chain verify` on every node's data dir: node id -> the verdict line."""
    from pouw.blockchain.audit import audit_store
    from pouw.mining.claims import ClaimRule

    verdicts = {}
    for node_id in node_ids:
        report = audit_store(root / node_id, seal_rules=(), claim_rule=ClaimRule())
        verdicts[node_id] = ("ok: " if report.ok else "BAD: ") + report.describe()
    return verdicts
