"""`pouw bench mining`: the full miner loop against a plain torch loop, in the same process.

efficiency = samples/s of the miner loop (iteration, nonce trials, compression, signing,
sealing found blocks into a real chain) / samples/s of a plain loop (zero_grad, forward,
backward, step) training the same model on the same batches, both with one torch thread.
Measured on the reference workload (MLP 64-1024-1024-10, digits, batch 256) and, as
efficiency_demo, on the demo model (MLP 64-128-64-10, batch 100).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import torch
import torch.nn.functional as F  # noqa: N812

from pouw.blockchain.block import Block, sign_block
from pouw.blockchain.chain import AddStatus, Chain
from pouw.blockchain.iteration_message import IterationMessage
from pouw.blockchain.params import ChainParams, bootstrap_task_id, devnet_key, devnet_params
from pouw.blockchain.store import ChainStore
from pouw.crypto import sha256
from pouw.errors import InvalidBlock
from pouw.mining.budget import derive_nonce, nonce_budget
from pouw.mining.claims import ClaimRule
from pouw.mining.miner import Miner
from pouw.mining.trainer import TaskTrainer
from pouw.mining.verify import BlockVerifier
from pouw.ml.datasets import load_dataset
from pouw.ml.iteration import configure_determinism, evaluate
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

Report = Callable[[str], None]
BLOCK_TIME_MS = 1_000

REFERENCE = TaskSpec(
    model=ModelSpec(layers=(64, 1024, 1024, 10)),
    dataset=DatasetSpec(name="digits"),
    batch_size=256,
    learning_rate=0.05,
    epochs=1000,
    tau=1e-3,
    miners=1,
)
DEMO = msgspec.structs.replace(
    REFERENCE, model=ModelSpec(layers=(64, 128, 64, 10)), batch_size=100, learning_rate=0.1
)


class MiningRig:
    """A real chain whose bootstrap task is `spec`, a miner on its tip, found blocks imported
    (each passing the seal check every node runs)."""

    def __init__(
        self, spec: TaskSpec, workdir: Path, difficulty: int, block_time_ms: int = 100
    ) -> None:
        self.miner_key = devnet_key("miner")
        self.params: ChainParams = devnet_params(
            ("miner",),
            initial_difficulty=difficulty,
            block_time_ms=block_time_ms,
            bootstrap_task=spec,
        )
        self.chain = Chain(ChainStore(workdir), self.params)
        task_id = bootstrap_task_id(self.params)
        assert task_id is not None
        self.task_id = task_id
        self.verifier = BlockVerifier(self.params, self.task_spec)
        self.chain.seal_rules = (self.verifier,)
        self.chain.claim_rule = ClaimRule()
        self.blocks: list[Block] = []
        self.check_own_blocks = False
        """Re-execute the rig's own blocks too (tests of what a tampering miner publishes)."""
        self.rejected: list[str] = []
        self._template = self._next_template()

    def task_spec(self, task_id: bytes) -> TaskSpec | None:
        record = self.chain.state.tasks.get(task_id)
        return None if record is None else record.spec

    def _next_template(self) -> Block:
        return self.chain.assemble_block(self.miner_key.public_key, self.miner_key.address, [])

    def template(self) -> Block | None:
        return self._template

    def accept(self, block: Block) -> None:
        if not self.check_own_blocks:
            self.verifier.vouch(block)
        try:
            update = self.chain.add_block(block)
            if update.status in (AddStatus.EXTENDED, AddStatus.REORGANIZED):
                self.blocks.append(block)
        except InvalidBlock as error:
            self.rejected.append(error.reason)
        self._template = self._next_template()

    def miner(self) -> Miner:
        return Miner(self.miner_key, self.params, self.template, on_block=self.accept)

    def mine_blocks(self, trainer: TaskTrainer, count: int, miner: Miner | None = None) -> None:
        """Train until `count` blocks are won (winning is chance) or the task's epochs end."""
        miner = miner or self.miner()
        while len(self.blocks) < count and not trainer.finished:
            miner.train(trainer, max_iterations=10)

    def reseal(
        self,
        block: Block,
        message: IterationMessage,
        *,
        checkpoint: bytes | None = None,
        device_class: str | None = None,
    ) -> Block:
        """`block` claiming `message` instead, with the header that message implies
        (commitment, precursor, its first derived nonce: any wins at difficulty 1), signed by
        the rig's miner: a forgery only re-execution can tell."""
        encoded = message.encode()
        header = msgspec.structs.replace(
            block.header,
            iteration_hash=sha256(encoded),
            history_commitment=message.commitment(),
            precursor=message.precursor(),
            nonce=derive_nonce(message.precursor(), 0),
            device_class=block.header.device_class if device_class is None else device_class,
        )
        forged = msgspec.structs.replace(
            block,
            header=header,
            iteration_message=encoded,
            checkpoint=block.checkpoint if checkpoint is None else checkpoint,
        )
        return sign_block(forged, self.miner_key, self.params.chain_id)

    def trainer(self, spec: TaskSpec) -> TaskTrainer:
        return TaskTrainer(
            self.task_id,
            spec,
            load_dataset(spec.dataset),
            self.miner_key.public_key,
            checkpoint_interval=self.params.checkpoint_interval,
        )


def _plain_loop(spec: TaskSpec, trainer: TaskTrainer, iterations: int) -> float:
    """Samples/s of textbook torch training on the miner's own batch schedule."""
    model, optimizer = trainer.model, trainer.optimizer
    samples = 0
    start = time.perf_counter()
    for _ in range(iterations):
        x, y = trainer.batch_tensors()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        trainer.advance(trainer.commitment)
        samples += len(y)
    del spec
    return samples / (time.perf_counter() - start)


def _miner_loop(rig: MiningRig, trainer: TaskTrainer, iterations: int) -> tuple[float, Miner]:
    miner = rig.miner()
    start = time.perf_counter()
    stats = miner.train(trainer, max_iterations=iterations)
    return stats.samples / (time.perf_counter() - start), miner


def _efficiency(
    spec: TaskSpec, workdir: Path, iterations: int, rounds: int, report: Report, label: str
) -> dict[str, Any]:
    probe = MiningRig(spec, workdir / f"{label}-probe", difficulty=1)
    iteration_s = spec.batch_size / _plain_loop(spec, probe.trainer(spec), 20)
    budget = nonce_budget(
        probe.params.omega_b, probe.params.omega_m, spec.batch_size, probe.trainer(spec).model_size
    )
    # Difficulty for one block per BLOCK_TIME_MS at this machine's iteration rate, as the
    # network's retargeting would settle it.
    difficulty = max(1, round(BLOCK_TIME_MS / 1000 / iteration_s * budget))
    rig = MiningRig(spec, workdir / label, difficulty=difficulty, block_time_ms=BLOCK_TIME_MS)
    plain_trainer, mining_trainer = rig.trainer(spec), rig.trainer(spec)
    _plain_loop(spec, plain_trainer, 5)
    _miner_loop(rig, mining_trainer, 5)
    plain_rates, miner_rates, nonces = [], [], []
    for round_number in range(1, rounds + 1):
        plain_rates.append(_plain_loop(spec, plain_trainer, iterations))
        rate, _ = _miner_loop(rig, mining_trainer, iterations)
        miner_rates.append(rate)
        nonces.append(budget)
        report(
            f"{label} round {round_number}/{rounds}: plain {plain_rates[-1]:,.0f} samples/s, "
            f"miner {rate:,.0f} samples/s (ratio {rate / plain_rates[-1]:.3f}), "
            f"{len(rig.blocks)} blocks so far"
        )
    # Each round's miner run is paired with the plain run just before it, so slow drift of
    # the machine (clock, cache, neighbours) cancels out of the ratio; many short rounds, so
    # the median is not moved by the few that a neighbour's burst lands in (a round's ratio
    # varies by about 5% on a shared 2-core machine).
    ratios = [mined / plain for plain, mined in zip(plain_rates, miner_rates, strict=True)]
    return {
        "efficiency": statistics.median(ratios),
        "iteration_ms": 1000 * spec.batch_size / statistics.median(plain_rates),
        "nonces_per_iteration": statistics.median(nonces),
        "rig": rig,
    }


def _verify_ms(rig: MiningRig, report: Report) -> float:
    timings = []
    for block in rig.blocks[-5:]:  # as another node would: the rig vouches for its own
        timings.append(BlockVerifier(rig.params, rig.task_spec).reexecute(block).seconds * 1000)
    report(f"re-executed {len(timings)} blocks: median {statistics.median(timings):.1f} ms")
    return statistics.median(timings)


def _accuracy_gap(report: Report, workdir: Path, epochs: int) -> tuple[float, float]:
    spec = msgspec.structs.replace(DEMO, epochs=epochs)
    dataset = load_dataset(spec.dataset)
    rig = MiningRig(spec, workdir / "accuracy", difficulty=50)
    plain = rig.trainer(spec)
    while not plain.finished:
        x, y, _ = plain.batch()
        plain.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(plain.model(x), y).backward()  # type: ignore[no-untyped-call]
        plain.optimizer.step()
        plain.advance(plain.commitment)
    mined = rig.trainer(spec)
    rig.miner().train(mined, stop=threading.Event())
    plain_accuracy = evaluate(plain.model, dataset.x_test, dataset.y_test)
    mined_accuracy = evaluate(mined.model, dataset.x_test, dataset.y_test)
    report(
        f"test accuracy after {epochs} epochs: "
        f"plain {plain_accuracy:.4f}, mined {mined_accuracy:.4f}"
    )
    return plain_accuracy, mined_accuracy


def run(
    report: Report, *, iterations: int = 60, rounds: int = 31, epochs: int = 30
) -> dict[str, Any]:
    configure_determinism()
    with tempfile.TemporaryDirectory(prefix="pouw-bench-mining-") as tmp:
        workdir = Path(tmp)
        reference = _efficiency(REFERENCE, workdir, iterations, rounds, report, "reference")
        demo = _efficiency(DEMO, workdir, iterations * 8, rounds, report, "demo")
        verify_ms = _verify_ms(reference["rig"], report)
        plain_accuracy, mined_accuracy = _accuracy_gap(report, workdir, epochs)
        rejected = reference["rig"].rejected + demo["rig"].rejected
    return {
        "bench": "mining",
        "efficiency": round(reference["efficiency"], 4),
        "efficiency_demo": round(demo["efficiency"], 4),
        "verify_ratio": round(verify_ms / reference["iteration_ms"], 3),
        "accuracy_gap_pp": round(100 * (plain_accuracy - mined_accuracy), 3),
        "iteration_ms": round(reference["iteration_ms"], 3),
        "verify_ms": round(verify_ms, 3),
        "nonces_per_iteration": reference["nonces_per_iteration"],
        "demo_iteration_ms": round(demo["iteration_ms"], 3),
        "plain_test_accuracy": round(plain_accuracy, 4),
        "mined_test_accuracy": round(mined_accuracy, 4),
        "blocks_rejected": len(rejected),
        "torch_threads": torch.get_num_threads(),
    }
