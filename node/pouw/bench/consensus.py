"""`pouw bench consensus`: what the consensus rules hold against, measured.

- **Work** (in process, a real chain mining the demo model): every lottery draw one real
  iteration can buy, whatever its miner varies for free (`seals_per_position_max`, want the
  nonce budget), how many blocks one position seals on a chain (`blocks_per_position_max`,
  want 1), and the CPU a node spends to re-execute one block divided by one plain training
  iteration (`verify_cost_ratio`).
- **Draw**: a producer that withholds block h + draw_delay until the draw seats it
  (`pouw.bench.draw_bias`), at the hash share one node of the 16-node devnet holds.
- **Attack** (a devnet with one miner doing `fake_work`): the attacker's blocks on the honest
  nodes' main chains at the end (`fake_blocks_on_honest_tips`, want 0), the 95th percentile
  from a fake block's arrival to its rejection over every honest node's
  `pouw_block_rejection_seconds` (`reject_p95_ms`), whether the attacker lost its stake.
- **Load** (a 16-node devnet): blocks stored but not on the final main chain over all blocks
  stored, over every node (`orphan_rate`, want <= 0.2), and whether every node ended on one
  tip (`tips_agree`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from pouw.bench.draw_bias import ALPHAS, draw_bias
from pouw.bench.mining import DEMO, MiningRig
from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.blockchain.store import ChainStore
from pouw.crypto import address_of, sha256
from pouw.devnet import BUILTIN_TASKS, Devnet, with_epochs
from pouw.devnet_report import chain_census
from pouw.errors import InvalidBlock, MalformedData
from pouw.mining.budget import derive_nonce, nonce_budget
from pouw.mining.verify import BlockVerifier
from pouw.ml.iteration import configure_determinism, forward_backward

Report = Callable[[str], None]
WORK_BLOCKS = 24
GRIND_VARIANTS = 64
DEVNET_TIMEOUT_S = 1_500
ATTACK_BLOCK_TIME_MS = 500
"""The attack devnet's block time: its task trains for a few seconds, so at the 3 s a 6-node
devnet on 2 cores gets, the attacker's share of blocks for it was a Poisson draw near 1 (none,
nothing to reject or slash, in about half the runs); at 500 ms it seals several."""


def _work(workdir: Path, report: Report) -> dict[str, Any]:
    rig = MiningRig(DEMO, workdir / "work", difficulty=4)
    trainer = rig.trainer(DEMO)
    rig.mine_blocks(trainer, WORK_BLOCKS)
    budget = nonce_budget(
        rig.params.omega_b, rig.params.omega_m, DEMO.batch_size, trainer.model_size
    )
    draws = [len(_lottery_draws(block, budget)) for block in rig.blocks]
    replays = [_replay_accepted(rig, block) for block in rig.blocks]
    iteration_s = _iteration_cpu_s(rig)
    verify_s, replayed = [], []
    for block in rig.blocks:
        verifier = BlockVerifier(rig.params, rig.task_spec)
        verifier.check_seal(block)  # builds the task's facts once, as a running node has
        started = time.process_time()
        replayed.append(verifier.reexecute(block).iterations)
        verify_s.append(time.process_time() - started)
    report(
        f"work: {len(rig.blocks)} blocks, budget {budget} nonces; grinding found at most "
        f"{max(draws)} draws a position; re-execution {1000 * statistics.median(verify_s):.2f} ms"
        f" CPU for {statistics.mean(replayed):.1f} iterations (one: {1000 * iteration_s:.3f} ms)"
    )
    return {
        "nonce_budget": budget,
        "seals_per_position_max": max(draws),
        "blocks_per_position_max": 1 + max(replays),
        "verify_cost_ratio": round(statistics.median(verify_s) / iteration_s, 2),
        "verify_iterations_mean": round(statistics.mean(replayed), 2),
        "checkpoint_interval": rig.params.checkpoint_interval,
    }


def _lottery_draws(block: Block, budget: int) -> set[bytes]:
    """Every seal hash one iteration buys when its miner varies what is free to it."""
    message = decode_iteration_message(block.iteration_message)
    draws = set()
    for variant in range(GRIND_VARIANTS):
        salt = variant.to_bytes(4, "big")
        ground = msgspec.structs.replace(
            message,
            previous_commitment=sha256(b"history" + salt),
            applied_updates_hash=sha256(b"updates" + salt),
        )
        precursor = ground.precursor()
        for index in range(budget):
            header = msgspec.structs.replace(
                block.header,
                timestamp_ms=block.header.timestamp_ms + variant,
                merkle_root=sha256(salt),
                precursor=precursor,
                nonce=derive_nonce(precursor, index),
            )
            draws.add(header.seal_hash())
    return draws


def _replay_accepted(rig: MiningRig, block: Block) -> int:
    """1 when the chain takes the same iteration again in a new block on its tip, else 0."""
    template = rig.chain.assemble_block(rig.miner_key.public_key, rig.miner_key.address, [])
    again = msgspec.structs.replace(
        template,
        header=msgspec.structs.replace(
            template.header,
            iteration_hash=block.header.iteration_hash,
            history_commitment=block.header.history_commitment,
            precursor=block.header.precursor,
            nonce=block.header.nonce,
        ),
        iteration_message=block.iteration_message,
        checkpoint=block.checkpoint,
    )
    claim_rule = rig.chain.claim_rule
    assert claim_rule is not None
    try:
        claim_rule(again, rig.chain.state)
    except InvalidBlock:
        return 0
    return 1


def _iteration_cpu_s(rig: MiningRig, iterations: int = 200) -> float:
    trainer = rig.trainer(DEMO)
    started = time.process_time()
    for _ in range(iterations):
        x, y, _ = trainer.batch()
        forward_backward(trainer.model, x, y, trainer.fingerprint)
        trainer.optimizer.step()
        trainer.advance(trainer.commitment)
    return (time.process_time() - started) / iterations


def _draw(report: Report) -> dict[str, Any]:
    """The ratio at one node's share of a 16-node network's hash rate, and the sweep."""
    one_in_16 = draw_bias(1 / 16, 64, 4, 1, trials=100_000, seed=7)
    by_alpha = {
        f"{alpha:.3f}": {
            "simulated": round(row["draw_bias"], 4),
            "closed_form": round(row["withholding"]["closed_form_ratio"], 4),
        }
        for alpha in ALPHAS
        for row in [draw_bias(alpha, 64, 4, 1, trials=20_000, seed=7)]
    }
    report("draw: " + ", ".join(f"alpha {a} -> {r}" for a, r in by_alpha.items()))
    return {
        "draw_bias": round(one_in_16["draw_bias"], 4),
        "draw_bias_closed_form": round(one_in_16["withholding"]["closed_form_ratio"], 4),
        "draw_bias_by_alpha": by_alpha,
    }


def _attack(workdir: Path, nodes: int, report: Report) -> dict[str, Any]:
    devnet = Devnet(
        workdir,
        nodes,
        with_epochs(BUILTIN_TASKS["digits"], 20),
        byzantine=1,
        attack="fake_work",
        block_time_ms=ATTACK_BLOCK_TIME_MS,
    )
    try:
        summary = devnet.run(lambda _: None, DEVNET_TIMEOUT_S)
        attacker = summary["attackers"][0]
        statuses = devnet.poll().statuses
        honest = [node_id for node_id in devnet.processes if node_id != attacker]
        rejection = _merged_histogram(devnet.processes[n].client.metrics() for n in honest)
    finally:
        devnet.stop()
    attacker_address = statuses[attacker]["address"]
    fake = sum(
        blocks_by(workdir / node_id, attacker_address, summary["task_id"]) for node_id in honest
    )
    tips = {statuses[node_id].get("tip") for node_id in honest}
    slashed = summary["slashed_stake"].get(attacker, 0)
    p95 = _quantile(rejection, 0.95)
    report(
        f"attack: {fake} fake blocks on {len(honest)} honest main chains, rejection p95 "
        f"{p95:.0f} ms, attacker slashed {slashed}, honest tips {len(tips)}"
    )
    return {
        "fake_blocks_on_honest_tips": fake,
        "reject_p95_ms": round(p95, 1),
        "attacker_slashed": slashed > 0,
        "attack_tips_agree": len(tips) == 1,
        "attack_task_state": summary["task_state"],
    }


def blocks_by(data_dir: Path, miner: str, task_id: str) -> int:
    """Main-chain blocks in `data_dir` mined by `miner` on the task."""
    store = ChainStore(data_dir, read_only=True)
    try:
        count = 0
        for block_hash in store.main_chain()[1:]:
            block = store.block(block_hash)
            if block is None or address_of(block.header.miner) != miner:
                continue
            try:
                message = decode_iteration_message(block.iteration_message)
            except MalformedData:
                continue
            count += message.task_id.hex() == task_id
        return count
    finally:
        store.close()


def _merged_histogram(expositions: Any) -> dict[float, float]:
    """Cumulative bucket counts of pouw_block_rejection_seconds, summed over nodes."""
    buckets: dict[float, float] = {}
    for text in expositions:
        for family in text_string_to_metric_families(text):
            if family.name != "pouw_block_rejection_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _quantile(buckets: dict[float, float], q: float) -> float:
    """In milliseconds, interpolated inside the bucket that holds it; 0 with no sample."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total == 0:
        return 0.0
    target, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= target:
            if bound == float("inf"):
                return 1000 * lower
            share = (target - below) / max(buckets[bound] - below, 1e-9)
            return 1000 * (lower + share * (bound - lower))
        lower, below = bound, buckets[bound]
    return 1000 * lower


def _load(workdir: Path, nodes: int, report: Report) -> dict[str, Any]:
    devnet = Devnet(workdir, nodes, BUILTIN_TASKS["digits"])
    try:
        summary = devnet.run(lambda _: None, DEVNET_TIMEOUT_S)
    finally:
        devnet.stop()
    census = chain_census(workdir, devnet.processes)
    orphan_rate = census["orphan_rate"]
    report(
        f"load: {nodes} nodes, {census['stored_blocks']} blocks stored, orphan rate "
        f"{orphan_rate:.3f}, tips agree {summary.get('tips_agree')}, {summary['seconds']} s"
    )
    return {
        "orphan_rate": round(orphan_rate, 4),
        "tips_agree": bool(summary.get("tips_agree")),
        "load_nodes": nodes,
        "load_seconds": summary["seconds"],
        "load_task_state": summary["task_state"],
        "load_test_accuracy": summary["test_accuracy"],
    }


def run(report: Report, *, nodes: int = 16, attack_nodes: int = 6) -> dict[str, Any]:
    configure_determinism()
    with tempfile.TemporaryDirectory(prefix="pouw-bench-consensus-") as tmp:
        workdir = Path(tmp)
        work = _work(workdir, report)
        drawn = _draw(report)
        attack = _attack(workdir / "attack", attack_nodes, report)
        load = _load(workdir / "load", nodes, report)
    return {"bench": "consensus", **work, **drawn, **attack, **load}
