"""A whole network on one machine: the project's main job (`pouw devnet`, `make demo`).

Every node is its own OS process running `pouw node` on 127.0.0.1 (its own data dir, p2p
port and API port): a supervisor (everybody's bootstrap peer), miners, a verifier, an
evaluator and a client. They stake, the client pays for a task through its node's API, the
drawn miners train it while mining, the verifier re-executes every block, the evaluator
scores the final models and closes the task on chain. With `byzantine` set, the last miners
attack (POUW_ATTACK, a devnet-only setting) and the summary shows what the network made of
them. This module only orchestrates and watches through the HTTP API; it never imports torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pouw.api.client import ApiError, NodeClient
from pouw.config import ATTACKS
from pouw.devnet_report import (
    devnet_block_time_ms,
    machine_cores,
    security_summary,
    tips_agree,
)
from pouw.errors import PouwError
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec, task_spec_from_mapping

DEVNET_TOKEN = "devnet-token"
STAKE = 10.0
TASK_REWARD = 100.0
READY_TIMEOUT_S = 90.0
TIPS_TIMEOUT_S = 120.0
"""How long the devnet waits, once the task is closed, for every node to report one tip."""
STOP_TIMEOUT_S = 20.0

BUILTIN_TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(
        model=ModelSpec(layers=(64, 128, 64, 10)),
        dataset=DatasetSpec(name="digits"),
        batch_size=32,
        learning_rate=0.05,
        epochs=300,
        tau=1e-3,
        min_accuracy=0.9,
    ),
    "iris": TaskSpec(
        model=ModelSpec(layers=(4, 16, 3)),
        dataset=DatasetSpec(name="iris"),
        batch_size=16,
        learning_rate=0.1,
        epochs=800,
        tau=1e-3,
        min_accuracy=0.85,
    ),
    "wine": TaskSpec(
        model=ModelSpec(layers=(13, 32, 3)),
        dataset=DatasetSpec(name="wine"),
        batch_size=16,
        learning_rate=0.1,
        epochs=600,
        tau=1e-3,
        min_accuracy=0.85,
    ),
    "breast_cancer": TaskSpec(
        model=ModelSpec(layers=(30, 32, 2)),
        dataset=DatasetSpec(name="breast_cancer"),
        batch_size=32,
        learning_rate=0.05,
        epochs=300,
        tau=1e-3,
        min_accuracy=0.9,
    ),
}


def task_from_name(name: str) -> TaskSpec:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    import yaml

    with open(name, encoding="utf-8") as file:
        return task_spec_from_mapping(yaml.safe_load(file))


@dataclass(frozen=True)
class NodePlan:
    node_id: str
    role: str
    p2p_port: int
    api_port: int
    stake: float
    attack: str | None = None
    """The attack this node makes (a Byzantine miner), if any."""


@dataclass
class NodeProcess:
    plan: NodePlan
    data_dir: Path
    process: subprocess.Popen[bytes]
    client: NodeClient

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"


@dataclass
class Snapshot:
    """What the watcher shows: per-node status, the task's view, elapsed time."""

    phase: str = "starting nodes"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    task: dict[str, Any] | None = None
    seconds: float = 0.0
    answered: frozenset[str] = frozenset()
    """The nodes that answered the latest poll (`statuses` keeps older answers too)."""


class DevnetError(PouwError, RuntimeError):
    pass


def plan_nodes(count: int, byzantine: int = 0, attack: str | None = None) -> list[NodePlan]:
    """Supervisor, verifier, evaluator and client, and `count - 4` miners (at least one), the
    last `byzantine` of which attack with `attack`."""
    if count < 5:
        raise ValueError(
            "a devnet needs at least 5 nodes: supervisor, verifier, evaluator, client and one miner"
        )
    miners = count - 4
    if byzantine:
        if attack not in ATTACKS:
            raise ValueError(
                f"name the attack of the Byzantine miners: one of {', '.join(ATTACKS)}"
            )
        if not 0 < byzantine < miners:
            raise ValueError(
                f"{byzantine} Byzantine miners of {miners}: at least one miner must be honest"
            )
    roles = [("supervisor", "SUPERVISOR"), ("verifier", "VERIFIER"), ("evaluator", "EVALUATOR")]
    roles += [(f"miner-{i}", "MINER") for i in range(miners)]
    roles.append(("client", "PEER"))
    attackers = {f"miner-{i}" for i in range(miners - byzantine, miners)}
    ports = free_ports(2 * len(roles))
    return [
        NodePlan(
            node_id,
            role,
            ports[2 * i],
            ports[2 * i + 1],
            0.0 if role == "PEER" else STAKE,
            attack if node_id in attackers else None,
        )
        for i, (node_id, role) in enumerate(roles)
    ]


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def node_environment(
    plan: NodePlan, data_dir: Path, bootstrap_port: int, block_time_ms: int | None = None
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("POUW_")}
    env.update(
        {
            "POUW_NODE_ID": plan.node_id,
            "POUW_ROLE": plan.role,
            "POUW_HOST": "127.0.0.1",
            "POUW_PORT": str(plan.p2p_port),
            "POUW_API_PORT": str(plan.api_port),
            "POUW_API_TOKEN": DEVNET_TOKEN,
            "POUW_DATA_DIR": str(data_dir),
            "POUW_STAKE_AMOUNT": str(plan.stake),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if plan.p2p_port != bootstrap_port:
        env["POUW_BOOTSTRAP_PEERS"] = f"127.0.0.1:{bootstrap_port}"
    if plan.attack is not None:
        env["POUW_ATTACK"] = plan.attack
    if block_time_ms is not None:
        env["POUW_BLOCK_TIME_MS"] = str(block_time_ms)
    return env


class Devnet:
    def __init__(
        self,
        root: Path,
        nodes: int,
        task: TaskSpec,
        *,
        byzantine: int = 0,
        attack: str | None = None,
        aggregator: str | None = None,
        block_time_ms: int | None = None,
    ) -> None:
        """`aggregator` overrides the task's (``mean`` shows the network unprotected);
        `block_time_ms` the one chosen from the node count and the machine's cores."""
        self.root = root
        self.plans = plan_nodes(nodes, byzantine, attack)
        self.block_time_ms = block_time_ms or devnet_block_time_ms(nodes, machine_cores())
        self.tips_agree = False
        """Every node reported one tip in a poll after the task closed (`await_one_tip`)."""
        self.attack = attack if byzantine else None
        miners = sum(1 for plan in self.plans if plan.role == "MINER")
        self.task = msgspec.structs.replace(
            task, miners=miners, aggregator=aggregator or task.aggregator
        )
        self.processes: dict[str, NodeProcess] = {}
        self.snapshot = Snapshot()
        self.started = time.monotonic()
        self.task_id: str | None = None
        self.staked = False
        """Every node's ticket was on chain at some point (so a missing one was slashed)."""

    # -- processes -----------------------------------------------------------------------------

    def launch(self) -> None:
        for plan in self.plans:
            self.spawn(plan)

    def spawn(self, plan: NodePlan) -> NodeProcess:
        """Start (or restart, on its existing data dir) one node process."""
        data_dir = self.root / plan.node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        with (data_dir / "node.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "pouw.cli", "node"],
                env=node_environment(plan, data_dir, self.plans[0].p2p_port, self.block_time_ms),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the devnet, which stops them in order
            )
        client = NodeClient(f"http://127.0.0.1:{plan.api_port}", token=DEVNET_TOKEN)
        self.processes[plan.node_id] = NodeProcess(plan, data_dir, process, client)
        return self.processes[plan.node_id]

    def stop(self) -> None:
        for node in self.processes.values():
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.processes.values():
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            node.client.close()

    def _check_alive(self) -> None:
        for node in self.processes.values():
            code = node.process.poll()
            if code is not None:
                tail = node.log_path.read_text(errors="replace").splitlines()[-15:]
                raise DevnetError(
                    f"node {node.plan.node_id} exited with {code}; its log ends:\n"
                    + "\n".join(tail)
                )

    # -- watching ------------------------------------------------------------------------------

    def poll(self) -> Snapshot:
        snapshot = self.snapshot
        snapshot.seconds = time.monotonic() - self.started
        # All at once, so that the tips compared were reported at about the same moment.
        with ThreadPoolExecutor(max_workers=len(self.processes) or 1) as pool:
            answers = pool.map(_status_of, self.processes.values())
        answered = set()
        for node_id, status in zip(self.processes, answers, strict=True):
            if status is not None:
                snapshot.statuses[node_id] = status
                answered.add(node_id)
        snapshot.answered = frozenset(answered)
        if self.task_id is not None:
            with contextlib.suppress(ApiError, OSError):
                snapshot.task = self.processes["client"].client.task(self.task_id)
        return snapshot

    def wait_for(
        self,
        phase: str,
        condition: Callable[[Snapshot], bool],
        timeout: float,
        on_poll: Callable[[Snapshot], None],
    ) -> None:
        self.snapshot.phase = phase
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            snapshot = self.poll()
            on_poll(snapshot)
            if condition(snapshot):
                return
            if time.monotonic() > deadline:
                raise DevnetError(f"timed out after {timeout:.0f} s while {phase}")
            time.sleep(0.25)

    def start(self, on_poll: Callable[[Snapshot], None], timeout: float) -> None:
        """Launch every node and wait until they are connected and their tickets are mined:
        a network ready to take tasks (from `run`, or from anyone with the client's API)."""
        self.launch()
        everyone = len(self.plans)
        self.wait_for(
            "starting nodes and connecting peers",
            lambda s: (
                len(s.statuses) == everyone
                and all(status["peer_count"] > 0 for status in s.statuses.values())
            ),
            READY_TIMEOUT_S,
            on_poll,
        )
        self.wait_for("staking: tickets mined into blocks", self._all_staked, timeout, on_poll)
        self.staked = True

    def run(self, on_poll: Callable[[Snapshot], None], timeout: float) -> dict[str, Any]:
        self.start(on_poll, timeout)
        self.submit()
        self.wait_until_closed(on_poll, timeout)
        self.await_one_tip(on_poll)
        return self.summary()

    def await_one_tip(self, on_poll: Callable[[Snapshot], None]) -> bool:
        """Wait (at most TIPS_TIMEOUT_S) for every node to report the same tip."""
        everyone = len(self.processes)
        try:
            self.wait_for(
                "waiting for every node to agree on one tip",
                lambda s: tips_agree({n: s.statuses[n] for n in s.answered}, everyone),
                TIPS_TIMEOUT_S,
                on_poll,
            )
        except DevnetError:
            return False
        self.tips_agree = True
        return True

    def submit(self) -> str:
        """The client pays for the devnet's task; its id."""
        client = self.processes["client"].client
        self.task_id = client.submit_task(
            _spec_mapping(self.task), reward=TASK_REWARD, request_id="devnet-task"
        )
        return self.task_id

    def wait_until_closed(self, on_poll: Callable[[Snapshot], None], timeout: float) -> None:
        self.wait_for(
            "training the client's task while mining",
            lambda s: s.task is not None and s.task["phase"] in ("completed", "failed", "refunded"),
            timeout,
            on_poll,
        )

    def _all_staked(self, snapshot: Snapshot) -> bool:
        del snapshot
        for node in self.processes.values():
            if node.plan.stake <= 0:
                continue
            try:
                if not node.client.economics()["staked"]:
                    return False
            except (ApiError, OSError):
                return False
        return True

    def summary(self) -> dict[str, Any]:
        snapshot = self.poll()
        task = snapshot.task or {}
        verifier = snapshot.statuses.get("verifier", {}).get("stats", {})
        economics: dict[str, dict[str, Any]] = {}
        for node_id, node in self.processes.items():
            with contextlib.suppress(ApiError, OSError):
                economics[node_id] = node.client.economics()
        heights = [status["blockchain_height"] for status in snapshot.statuses.values()]
        return {
            "task_id": self.task_id,
            "task_state": task.get("phase", "unknown"),
            "test_accuracy": task.get("test_accuracy"),
            "min_accuracy": self.task.min_accuracy,
            "height": max(heights, default=0),
            "tips_agree": self.tips_agree,
            "block_time_ms": self.block_time_ms,
            "blocks_verified": verifier.get("blocks_verified", 0),
            "blocks_rejected": verifier.get("blocks_rejected", 0),
            "task_blocks": task.get("blocks", 0),
            "nodes": len(self.plans),
            "miners": self.task.miners,
            "aggregator": self.task.aggregator,
            "attack": self.attack,
            "attackers": [plan.node_id for plan in self.plans if plan.attack is not None],
            **security_summary(
                {plan.node_id: plan.stake for plan in self.plans},
                [plan.node_id for plan in self.plans if plan.role == "MINER"],
                snapshot.statuses,
                snapshot.task,
                economics,
                staked=self.staked,
            ),
            "rewards": {node_id: e["rewards_earned"] for node_id, e in economics.items()},
            "seconds": round(snapshot.seconds, 1),
            "data_dir": str(self.root),
        }


def _status_of(node: NodeProcess) -> dict[str, Any] | None:
    try:
        return node.client.status()
    except (ApiError, OSError):
        return None


def _spec_mapping(spec: TaskSpec) -> dict[str, Any]:
    mapping: dict[str, Any] = msgspec.to_builtins(spec)
    return mapping


def with_epochs(spec: TaskSpec, epochs: int | None) -> TaskSpec:
    return spec if epochs is None else msgspec.structs.replace(spec, epochs=epochs)
