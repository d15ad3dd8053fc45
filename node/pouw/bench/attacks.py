"""`pouw bench attacks`: what Byzantine miners do to a task's model, with and without the defence.

Method. The protocol's data-parallel training core, in process (`attack_training`): n workers,
the last f of them attackers, train the digits MLP 64-128-64-10 (`pouw.ml` model and dataset,
the task's shards, batches of 64 in the task's epoch order, learning rate 0.2) in synchronous
rounds, in two units (what one round's update is) and two settings (n = 7, f = 2 and
n = 10, f = 3):

- ``gradients``: one SGD step per worker a round, 300 rounds (as the literature measures).
- ``sums``: what the live protocol aggregates, each miner's sum of LOCAL_STEPS
  Strom-compressed steps since the last aggregation, 75 rounds (the same 300 steps).

Per unit, setting and seed (SEEDS seeds from SEED_BASE; the screen was tuned on seeds 0-2):

- honest_all_accuracy: no attackers, the plain mean of all n;
- honest_only_accuracy: the f attackers' workers left out, the plain mean of the rest: what
  the honest majority achieves alone, the baseline the targets compare with;
- defence_accuracy: no attackers, through `pouw.security.Defence` (what the defence costs);
- per attack, protected_accuracy (through the defence) and unprotected_accuracy (plain mean);
  detection_rate and false_positive_rate: the share of the attackers' and of the honest
  updates the defence flags.

Accuracy is measured on the withheld test set (359 rows: one row is 0.28 pp). Jobs (one seed of
one attack in one unit and setting) run on PROCESSES worker processes with one torch thread each.

fake_work is a block-level attack: the attackers publish blocks whose iteration message claims
an update the claimed iteration did not compute (a random vector of the honest norm, a peer's
gradient copied, their own previous one replayed), with message, commitment, precursor, nonce
and signature all consistent. Real blocks are mined with `pouw.mining` for every worker of a
7-miner task and `BlockVerifier.reexecute` judges each one: detection_rate = forged blocks
rejected / forged blocks, false_positive_rate = honest blocks rejected / honest blocks. The
protocol excludes a rejected block's work, so protected_accuracy trains with the attackers'
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
from rich.console import Group
from rich.table import Table

from pouw.bench.attack_rounds import (
    PROCESSES,
    ROUNDS,
    SEED_BASE,
    SEEDS,
    SETTINGS,
    Job,
    Outcome,
    Run,
    run_job,
)
from pouw.bench.attack_training import LOCAL_STEPS, SPEC, TAU, UNITS, Setting
from pouw.bench.mining import MiningRig
from pouw.blockchain.block import Block
from pouw.blockchain.iteration_message import decode_iteration_message
from pouw.config import ATTACKS
from pouw.errors import InvalidBlock
from pouw.mining.trainer import TaskTrainer
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import configure_determinism
from pouw.security.attacks import STALE_ROUNDS, attack_update
from pouw.spec import TaskSpec

Report = Callable[[str], None]

FAKE_WORK_BLOCKS = 20
"""Blocks each miner of the fake_work chain mines (difficulty 1: every iteration wins)."""
FAKE_WORK_SETTING = Setting(7, 2)

TARGET_DETECTION = 0.9
TARGET_FALSE_POSITIVES = 0.05
TARGET_ACCURACY_GAP = 0.02
"""Protected accuracy below honest-only by at most this, on average and on every seed."""
TARGET_COLLAPSE = 0.5
"""Protected accuracy above this on every seed."""
TARGET_DEFENCE_COST = 0.005
"""Without attackers, the defence below the plain mean by at most this."""
DETECTION_TARGETS = ("sign_flip", "scale", "noise", "ipm", "label_flip", "fake_work")


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
    """Mine real blocks for every worker of a 7-miner task (FAKE_WORK_SETTING), forge the
    attackers' ones and re-execute all of them as a verifier does.

    The attackers' claims rotate through three lies: a random update of the honest norm
    (`attack_update("fake_work")`), a peer's gradient copied, and their own previous one
    replayed. Message, commitment, precursor, nonce and signature are all consistent, so only
    re-execution can tell."""
    chain_spec = msgspec.structs.replace(
        spec, epochs=1000, tau=1e-3, miners=FAKE_WORK_SETTING.workers
    )
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="pouw-bench-attacks-") as tmp:
        # A 1 ms target block time keeps the retargeted difficulty at 1: every iteration wins.
        rig = MiningRig(chain_spec, Path(tmp), difficulty=1, block_time_ms=1)
        # One key plays every worker here, which the claim rule would refuse (one position
        # per ticket); this bench measures what re-execution tells apart.
        rig.chain.claim_rule = None
        dataset = load_dataset(chain_spec.dataset)
        mined: dict[int, list[Block]] = {}
        for worker in range(FAKE_WORK_SETTING.workers):
            trainer = TaskTrainer(
                rig.task_id,
                chain_spec,
                dataset,
                rig.miner_key.public_key,
                worker,
                FAKE_WORK_SETTING.workers,
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
    return round(numerator / denominator, 4) if denominator else 0.0


def _detection(runs: Sequence[Run]) -> tuple[float, float]:
    flags = [run.flags for run in runs]
    return (
        _rate(sum(f.attacker_flagged for f in flags), sum(f.attacker_updates for f in flags)),
        _rate(sum(f.honest_flagged for f in flags), sum(f.honest_updates for f in flags)),
    )


def _accuracies(runs: Sequence[Run]) -> list[float]:
    return [round(run.accuracy, 4) for run in runs]


def _mean(values: Sequence[float]) -> float:
    return round(statistics.fmean(values), 4)


def _outcomes(jobs: list[Job], processes: int, report: Report) -> list[Outcome]:
    """Run the jobs on `processes` worker processes (each with one torch thread), reporting
    each as it ends."""
    done: list[Outcome] = []

    def finished(outcome: Outcome) -> None:
        done.append(outcome)
        job = outcome.job
        report(
            f"{len(done)}/{len(jobs)}: {job.unit} {job.setting.name} {job.kind or 'no attack'} "
            f"seed {job.seed}: protected {outcome.protected.accuracy:.4f}, "
            f"unprotected {outcome.unprotected.accuracy:.4f}"
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


def _slowest_first(job: Job) -> tuple[int, int]:
    adaptive = job.kind is not None and job.kind.startswith("adaptive")
    return (-int(adaptive) * job.rounds * job.setting.workers, -job.rounds)


def run(
    report: Report,
    *,
    rounds: dict[str, int] | None = None,
    seeds: int = SEEDS,
    attacks: Sequence[str] = ATTACKS,
    settings: Sequence[Setting] = SETTINGS,
    units: Sequence[str] = UNITS,
    processes: int = PROCESSES,
    blocks_per_miner: int = FAKE_WORK_BLOCKS,
) -> dict[str, Any]:
    configure_determinism()
    started = time.perf_counter()
    rounds = {**ROUNDS, **(rounds or {})}
    seed_list = [SEED_BASE + seed for seed in range(seeds)]
    kinds: list[str | None] = [None, *attacks]
    jobs = [
        Job(kind, unit, setting, seed, rounds[unit])
        for unit in units
        for setting in settings
        for kind in kinds
        for seed in seed_list
    ]
    report(
        f"units {', '.join(units)}; settings {', '.join(s.name for s in settings)}; "
        f"seeds {seed_list}; {len(jobs)} training jobs on {processes} processes"
    )
    outcomes = _outcomes(sorted(jobs, key=_slowest_first), processes, report)
    verdicts = (
        _fake_work_blocks(SPEC, FAKE_WORK_SETTING.attackers, blocks_per_miner, report)
        if "fake_work" in attacks
        else None
    )
    results: dict[str, dict[str, Any]] = {}
    for unit in units:
        for setting in settings:
            mine = [o for o in outcomes if o.job.unit == unit and o.job.setting == setting]
            results.setdefault(unit, {})[setting.name] = _section(mine, attacks, verdicts)
    missed = _missed_targets(results)
    for line in missed:
        report(f"target missed: {line}")
    return {
        "bench": "attacks",
        "results": results,
        "targets_met": not missed,
        "targets_missed": missed,
        "fake_work_blocks": None if verdicts is None else _blocks(verdicts),
        "settings": {
            "units": list(units),
            "settings": [s.name for s in settings],
            "rounds": rounds,
            "local_steps": LOCAL_STEPS,
            "tau": TAU,
            "seeds": seed_list,
            "model": list(SPEC.model.layers),
            "dataset": SPEC.dataset.name,
            "batch_size": SPEC.batch_size,
            "learning_rate": SPEC.learning_rate,
            "stale_rounds": STALE_ROUNDS,
            "processes": processes,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def _blocks(verdicts: _BlockVerdicts) -> dict[str, Any]:
    return {
        "forged": verdicts.fake,
        "forged_rejected": verdicts.fake_rejected,
        "honest": verdicts.honest,
        "honest_rejected": verdicts.honest_rejected,
        "reasons": list(verdicts.reasons),
    }


def _section(
    outcomes: Sequence[Outcome], attacks: Sequence[str], verdicts: _BlockVerdicts | None
) -> dict[str, Any]:
    """One unit and setting: the baselines, and one row per attack."""

    def by_seed(kind: str | None) -> list[Outcome]:
        return sorted((o for o in outcomes if o.job.kind == kind), key=lambda o: o.job.seed)

    honest = by_seed(None)
    honest_only = [o.honest_only for o in honest if o.honest_only is not None]
    _, defence_false_positives = _detection([o.protected for o in honest])
    baselines = {
        "honest_all_accuracy": _mean(_accuracies([o.unprotected for o in honest])),
        "honest_only_accuracy": _mean(_accuracies(honest_only)),
        "defence_accuracy": _mean(_accuracies([o.protected for o in honest])),
        "defence_false_positive_rate": defence_false_positives,
        "per_seed": {
            "honest_all": _accuracies([o.unprotected for o in honest]),
            "honest_only": _accuracies(honest_only),
            "defence": _accuracies([o.protected for o in honest]),
        },
    }
    rows: dict[str, Any] = {}
    for kind in attacks:
        runs = by_seed(kind)
        detection, false_positives = _detection([o.protected for o in runs])
        if kind == "fake_work" and verdicts is not None:
            detection = _rate(verdicts.fake_rejected, verdicts.fake)
            false_positives = _rate(verdicts.honest_rejected, verdicts.honest)
        protected = _accuracies([o.protected for o in runs])
        rows[kind] = {
            "protected_accuracy": _mean(protected),
            "unprotected_accuracy": _mean(_accuracies([o.unprotected for o in runs])),
            "detection_rate": detection,
            "false_positive_rate": false_positives,
            "protected_per_seed": protected,
        }
    return {"baselines": baselines, "attacks": rows}


def _missed_targets(results: dict[str, dict[str, Any]]) -> list[str]:
    missed = []
    for unit, sections in results.items():
        for setting, section in sections.items():
            where = f"{unit} {setting}"
            base = section["baselines"]
            cost = base["honest_all_accuracy"] - base["defence_accuracy"]
            if cost > TARGET_DEFENCE_COST:
                missed.append(f"{where}: the defence costs {cost * 100:.2f} pp without attackers")
            if base["defence_false_positive_rate"] > TARGET_FALSE_POSITIVES:
                missed.append(
                    f"{where}: false positives without attackers "
                    f"{base['defence_false_positive_rate']} > {TARGET_FALSE_POSITIVES}"
                )
            honest_only = base["per_seed"]["honest_only"]
            for kind, row in section["attacks"].items():
                missed.extend(
                    f"{where} {kind}: {line}"
                    for line in _row_misses(kind, row, base["honest_only_accuracy"], honest_only)
                )
    return missed


def _row_misses(
    kind: str, row: dict[str, Any], honest_only: float, honest_only_per_seed: Sequence[float]
) -> list[str]:
    missed = []
    if honest_only - row["protected_accuracy"] > TARGET_ACCURACY_GAP:
        missed.append(f"protected {row['protected_accuracy']} vs honest-only {honest_only}")
    for seed, (mine, base) in enumerate(
        zip(row["protected_per_seed"], honest_only_per_seed, strict=False)
    ):
        if base - mine > TARGET_ACCURACY_GAP or mine <= TARGET_COLLAPSE:
            missed.append(f"seed {SEED_BASE + seed}: protected {mine} vs honest-only {base}")
    if row["false_positive_rate"] > TARGET_FALSE_POSITIVES:
        missed.append(f"false positives {row['false_positive_rate']} > {TARGET_FALSE_POSITIVES}")
    if kind in DETECTION_TARGETS and row["detection_rate"] < TARGET_DETECTION:
        missed.append(f"detection {row['detection_rate']} < {TARGET_DETECTION}")
    return missed


def results_table(result: dict[str, Any]) -> Group:
    """The bench's figures as a person reads them: a table per unit and setting, one row per
    attack, misses in red."""
    tables = []
    for unit, sections in result["results"].items():
        for setting, section in sections.items():
            tables.append(_table(f"{unit}, {setting}", section))
    return Group(*tables)


def _table(title: str, section: dict[str, Any]) -> Table:
    base = section["baselines"]
    honest_only, honest_per_seed = base["honest_only_accuracy"], base["per_seed"]["honest_only"]
    table = Table(
        title=(
            f"{title}: honest-only {honest_only:.4f}, honest-all {base['honest_all_accuracy']:.4f}"
            f", defence without attackers {base['defence_accuracy']:.4f}"
        )
    )
    table.add_column("attack", no_wrap=True)
    for header in ("protected", "worst seed", "unprotected", "detection", "false pos."):
        table.add_column(header, justify="right", no_wrap=True)
    for kind, row in section["attacks"].items():
        misses = _row_misses(kind, row, honest_only, honest_per_seed)
        protected = f"{row['protected_accuracy']:.4f}"
        worst = f"{min(row['protected_per_seed'], default=0.0):.4f}"
        if any(line.startswith(("protected", "seed")) for line in misses):
            protected, worst = f"[red]{protected}[/]", f"[red]{worst}[/]"
        detection = f"{row['detection_rate']:.3f}"
        if any(line.startswith("detection") for line in misses):
            detection = f"[red]{detection}[/]"
        false_positives = f"{row['false_positive_rate']:.3f}"
        if any(line.startswith("false") for line in misses):
            false_positives = f"[red]{false_positives}[/]"
        table.add_row(
            kind,
            protected,
            worst,
            f"{row['unprotected_accuracy']:.4f}",
            detection,
            false_positives,
        )
    return table
