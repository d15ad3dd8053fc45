"""`pouw bench attacks`: what Byzantine miners do to a task's model, with and without defences.

Method. The protocol's data-parallel training core, in process: MINERS miners, BYZANTINE of them
attackers (the last two workers), train the digits MLP 64-128-64-10 (`pouw.ml` model and
dataset, the task's shards; each worker reads full batches of 64 from its shard in the task's
epoch order) in synchronous rounds. Each round every miner computes the gradient of its batch
at the current model (all miners in one vectorised call); attackers replace theirs with
`attack_update` (little_is_enough sees all seven honest gradients; stale_model sends the
gradient at the model of STALE_ROUNDS rounds ago); the round's updates are aggregated and the
model takes one SGD step (learning rate 0.2). For each attack kind:

- honest_accuracy: the same training without attackers, the plain mean of all seven.
- byzantine_accuracy: with the attackers, protected as a miner applying its peers' updates is
  by default: `SenderScreen` drops the updates it flags (each miner judged over its last 10
  rounds, as a node that knows who signed each update can) and AGGREGATOR, the task's default
  (screened_mean), averages the rest.
- unprotected_accuracy: with the attackers, the plain mean, unscreened (`--aggregator mean`).
- krum_accuracy: with the attackers, behind the same screen, multi-Krum with f = 2 (ALTERNATIVE,
  the robust aggregator that lost least before the screen existed): what the default is
  measured against.
- detection_rate / false_positive_rate: in the byzantine run, the share of attacker updates
  and of honest updates that `SenderScreen` flags; per_round_*: the same for `UpdateScreen`,
  one round alone.

Accuracy is measured on the withheld test set (359 rows: one row is 0.28 pp) after ROUNDS
rounds and averaged over SEEDS seeds (each its own initial model and batch order; per-seed
figures in `accuracy_per_seed`). The screens' thresholds were chosen on seeds 0-2; the bench
runs seeds from SEED_BASE, so its figures are not fitted to its own data. Jobs (one seed of
one attack) run on PROCESSES worker processes with one torch thread each.

fake_work is a block-level attack: the attackers publish blocks whose iteration message claims
an update the claimed iteration did not compute (a random vector of the honest norm, a peer's
gradient copied, their own previous one replayed), with message, commitment, precursor, nonce
and signature all consistent. Real blocks are mined with `pouw.mining` for every worker of a
7-miner task and `BlockVerifier.reexecute` judges each one: detection_rate = forged blocks
rejected / forged blocks, false_positive_rate = honest blocks rejected / honest blocks. The
protocol excludes a rejected block's work, so byzantine_accuracy trains with the attackers'
updates dropped; unprotected_accuracy averages their random updates in.

Every figure is reported as measured; `targets_missed` names the targets the run missed.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from rich.table import Table

from pouw.bench.attack_rounds import (
    AGGREGATOR,
    ALTERNATIVE,
    ATTACKERS,
    BYZANTINE,
    MINERS,
    PROCESSES,
    ROUNDS,
    SEED_BASE,
    SEEDS,
    SPEC,
    Job,
    Outcome,
    Run,
    run_job,
)
from pouw.bench.mining import MiningRig
from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.errors import InvalidBlock
from pouw.mining.trainer import TaskTrainer
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import configure_determinism
from pouw.security.attacks import ATTACKS, STALE_ROUNDS, attack_update
from pouw.security.detection import SenderScreen, UpdateScreen
from pouw.spec import TaskSpec

Report = Callable[[str], None]

FAKE_WORK_BLOCKS = 20
"""Blocks each miner of the fake_work chain mines (difficulty 1: every iteration wins)."""

TARGET_DETECTION = 0.9
TARGET_FALSE_POSITIVES = 0.05
TARGET_ACCURACY_GAP = 0.02
DETECTION_TARGETS = ("sign_flip", "scale", "fake_work")


def _grad_sample(block: Block) -> bytes:
    return decode_iteration_message(block.iteration_message).grad_sample


@dataclass(frozen=True)
class _BlockVerdicts:
    fake: int
    fake_rejected: int
    honest: int
    honest_rejected: int
    reasons: tuple[str, ...]


def _fake_work_blocks(
    spec: TaskSpec, attackers: Sequence[int], blocks_per_miner: int, report: Report
) -> _BlockVerdicts:
    """Mine real blocks for every worker of a MINERS-worker task, forge the attackers' ones
    and re-execute all of them as a verifier does.

    The attackers' claims rotate through three lies: a random update of the honest norm
    (`attack_update("fake_work")`), a peer's gradient copied, and their own previous one
    replayed. Message, commitment, precursor, nonce and signature are all consistent, so only
    re-execution can tell."""
    chain_spec = msgspec.structs.replace(spec, epochs=1000, tau=1e-3)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="pouw-bench-attacks-") as tmp:
        # A 1 ms target block time keeps the retargeted difficulty at 1: every iteration wins.
        rig = MiningRig(chain_spec, Path(tmp), difficulty=1, block_time_ms=1)
        # One key plays every worker here, which the claim rule would refuse (one position
        # per ticket); this bench measures what re-execution tells apart.
        rig.chain.claim_rule = None
        dataset = load_dataset(chain_spec.dataset)
        mined: dict[int, list[Block]] = {}
        for worker in range(MINERS):
            trainer = TaskTrainer(
                rig.task_id, chain_spec, dataset, rig.miner_key.public_key, worker, MINERS
            )
            before = len(rig.blocks)
            for _ in range(blocks_per_miner):
                # One iteration a call: the pipeline has sealed its block when train returns,
                # so the next iteration mines on the new tip.
                rig.miner().train(trainer, max_iterations=1)
            mined[worker] = rig.blocks[before:]
        honest = [block for w, found in mined.items() if w not in attackers for block in found]
        forged = []
        for worker in attackers:
            for number, block in enumerate(mined[worker]):
                claimed = np.frombuffer(_grad_sample(block), np.float32).copy()
                if number % 3 == 0:
                    lie = attack_update("fake_work", torch.from_numpy(claimed), generator=generator)
                    sample = lie.numpy().tobytes()
                elif number % 3 == 1:
                    sample = _grad_sample(honest[(worker + number) % len(honest)])
                else:
                    sample = _grad_sample(mined[worker][number - 1])
                claim = msgspec.structs.replace(
                    decode_iteration_message(block.iteration_message), grad_sample=sample
                )
                forged.append(rig.reseal(block, claim))
        reasons: list[str] = []

        def rejected(block: Block) -> bool:
            try:
                rig.verifier.reexecute(block)
            except InvalidBlock as error:
                reasons.append(error.reason)
                return True
            return False

        verdicts = _BlockVerdicts(
            fake=len(forged),
            fake_rejected=sum(rejected(block) for block in forged),
            honest=len(honest),
            honest_rejected=sum(rejected(block) for block in honest),
            reasons=tuple(sorted(set(reasons))),
        )
        rig.chain.store.close()
    report(
        f"fake_work: re-executed {verdicts.fake} forged and {verdicts.honest} honest blocks: "
        f"{verdicts.fake_rejected} and {verdicts.honest_rejected} rejected"
    )
    return verdicts


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _flag_rates(runs: Sequence[Run], view: str) -> tuple[float, float]:
    flags = [getattr(run, view) for run in runs]
    return (
        _rate(sum(f.attacker_flagged for f in flags), sum(f.attacker_updates for f in flags)),
        _rate(sum(f.honest_flagged for f in flags), sum(f.honest_updates for f in flags)),
    )


def _mean_accuracy(runs: Sequence[Run | None]) -> float:
    return round(statistics.fmean(run.accuracy for run in runs if run is not None), 4)


def _outcomes(jobs: list[Job], processes: int, report: Report) -> list[Outcome]:
    """Run the jobs on `processes` worker processes (each with one torch thread), reporting
    each as it ends."""
    done: list[Outcome] = []

    def finished(outcome: Outcome) -> None:
        done.append(outcome)
        kind = outcome.job.kind or "honest"
        report(
            f"{len(done)}/{len(jobs)}: {kind} seed {outcome.job.seed}: test accuracy "
            f"{outcome.byzantine.accuracy:.4f}"
            + (
                f", unprotected {outcome.unprotected.accuracy:.4f}"
                if outcome.unprotected is not None
                else ""
            )
        )

    if processes <= 1:
        for job in jobs:
            finished(run_job(job))
        return done
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        for future in concurrent.futures.as_completed([pool.submit(run_job, j) for j in jobs]):
            finished(future.result())
    return done


def run(
    report: Report,
    *,
    rounds: int = ROUNDS,
    seeds: int = SEEDS,
    aggregator: str = AGGREGATOR,
    processes: int = PROCESSES,
    blocks_per_miner: int = FAKE_WORK_BLOCKS,
) -> dict[str, Any]:
    configure_determinism()
    started = time.perf_counter()
    seed_list = [SEED_BASE + seed for seed in range(seeds)]
    kinds: list[str | None] = [None, *ATTACKS]
    jobs = [Job(kind, seed, rounds, aggregator) for kind in kinds for seed in seed_list]
    report(
        f"{MINERS} miners ({BYZANTINE} attackers), {rounds} rounds, seeds {seed_list}, "
        f"{len(jobs)} training jobs on {processes} processes"
    )
    outcomes = _outcomes(jobs, processes, report)
    by_kind: dict[str | None, list[Outcome]] = {kind: [] for kind in kinds}
    for outcome in outcomes:
        by_kind[outcome.job.kind].append(outcome)

    honest_runs = [outcome.byzantine for outcome in by_kind[None]]
    honest_accuracy = _mean_accuracy(honest_runs)
    _, honest_only_per_round = _flag_rates(honest_runs, "per_round")
    _, honest_only_per_sender = _flag_rates(honest_runs, "per_sender")
    report(
        f"honest: test accuracy {honest_accuracy:.4f}; honest updates flagged "
        f"{honest_only_per_sender:.4f} (one round alone: {honest_only_per_round:.4f})"
    )
    verdicts = _fake_work_blocks(SPEC, ATTACKERS, blocks_per_miner, report)
    results: dict[str, dict[str, float]] = {}
    per_seed: dict[str, list[float]] = {"honest": [round(run.accuracy, 4) for run in honest_runs]}
    for kind in ATTACKS:
        runs = sorted(by_kind[kind], key=lambda outcome: outcome.job.seed)
        byzantine = [outcome.byzantine for outcome in runs]
        per_seed[kind] = [round(run.accuracy, 4) for run in byzantine]
        if kind == "fake_work":
            detection = per_round_detection = _rate(verdicts.fake_rejected, verdicts.fake)
            false_positives = per_round_fp = _rate(verdicts.honest_rejected, verdicts.honest)
            alternative = _mean_accuracy(byzantine)
        else:
            detection, false_positives = _flag_rates(byzantine, "per_sender")
            per_round_detection, per_round_fp = _flag_rates(byzantine, "per_round")
            alternative = _mean_accuracy([outcome.alternative for outcome in runs])
        row = results[kind] = {
            "honest_accuracy": honest_accuracy,
            "byzantine_accuracy": _mean_accuracy(byzantine),
            "unprotected_accuracy": _mean_accuracy([outcome.unprotected for outcome in runs]),
            "detection_rate": round(detection, 4),
            "false_positive_rate": round(false_positives, 4),
            "per_round_detection_rate": round(per_round_detection, 4),
            "per_round_false_positive_rate": round(per_round_fp, 4),
            f"{ALTERNATIVE}_accuracy": alternative,
        }
        report(
            f"{kind}: accuracy {row['byzantine_accuracy']:.4f} protected, "
            f"{row['unprotected_accuracy']:.4f} unprotected, {alternative:.4f} {ALTERNATIVE} "
            f"(honest {honest_accuracy:.4f}); detection {row['detection_rate']:.4f}, "
            f"false positives {row['false_positive_rate']:.4f}"
        )
    missed = _missed_targets(results)
    for line in missed:
        report(f"target missed: {line}")
    return {
        "bench": "attacks",
        "attacks": results,
        "targets_met": not missed,
        "targets_missed": missed,
        "honest_only_false_positive_rate": round(honest_only_per_sender, 4),
        "honest_only_per_round_false_positive_rate": round(honest_only_per_round, 4),
        "accuracy_per_seed": per_seed,
        "fake_work_blocks": {
            "forged": verdicts.fake,
            "forged_rejected": verdicts.fake_rejected,
            "honest": verdicts.honest,
            "honest_rejected": verdicts.honest_rejected,
            "reasons": list(verdicts.reasons),
        },
        "settings": {
            "miners": MINERS,
            "byzantine": BYZANTINE,
            "rounds": rounds,
            "seeds": seed_list,
            "model": list(SPEC.model.layers),
            "dataset": SPEC.dataset.name,
            "batch_size": SPEC.batch_size,
            "learning_rate": SPEC.learning_rate,
            "aggregator": aggregator,
            "alternative": ALTERNATIVE,
            "stale_rounds": STALE_ROUNDS,
            "screen": {
                "max_norm_ratio": UpdateScreen().max_norm_ratio,
                "min_cosine": UpdateScreen().min_cosine,
                "window": SenderScreen().window,
                "window_max_norm_ratio": SenderScreen().max_norm_ratio,
                "window_min_cosine": SenderScreen().min_cosine,
            },
            "processes": processes,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _missed_targets(results: dict[str, dict[str, float]]) -> list[str]:
    missed = []
    for kind, row in results.items():
        if kind in DETECTION_TARGETS:
            if row["detection_rate"] < TARGET_DETECTION:
                missed.append(
                    f"{kind}: detection_rate {row['detection_rate']} < {TARGET_DETECTION}"
                )
            if row["false_positive_rate"] > TARGET_FALSE_POSITIVES:
                missed.append(
                    f"{kind}: false_positive_rate {row['false_positive_rate']} "
                    f"> {TARGET_FALSE_POSITIVES}"
                )
        gap = row["honest_accuracy"] - row["byzantine_accuracy"]
        if gap > TARGET_ACCURACY_GAP:
            missed.append(f"{kind}: byzantine_accuracy {gap * 100:.2f} pp below honest")
    return missed


def results_table(result: dict[str, Any]) -> Table:
    """The bench's figures as a person reads them: one row per attack, misses in red."""
    rows = result["attacks"]
    honest = next(iter(rows.values()))["honest_accuracy"]
    aggregator = result["settings"]["aggregator"]
    table = Table(title=f"test accuracy (honest {honest:.4f}) and detection; {aggregator} protects")
    table.add_column("attack", no_wrap=True)
    for header in ("protected", "unprotected", ALTERNATIVE, "detection", "false pos."):
        table.add_column(header, justify="right", no_wrap=True)
    for kind, row in rows.items():
        protected = f"{row['byzantine_accuracy']:.4f}"
        if row["honest_accuracy"] - row["byzantine_accuracy"] > TARGET_ACCURACY_GAP:
            protected = f"[red]{protected}[/]"
        detection = f"{row['detection_rate']:.3f}"
        if kind in DETECTION_TARGETS and row["detection_rate"] < TARGET_DETECTION:
            detection = f"[red]{detection}[/]"
        false_positives = f"{row['false_positive_rate']:.3f}"
        if kind in DETECTION_TARGETS and row["false_positive_rate"] > TARGET_FALSE_POSITIVES:
            false_positives = f"[red]{false_positives}[/]"
        table.add_row(
            kind,
            protected,
            f"{row['unprotected_accuracy']:.4f}",
            f"{row[f'{ALTERNATIVE}_accuracy']:.4f}",
            detection,
            false_positives,
        )
    return table
