"""PoUWNode: one node of the network, and the seed's Python API.

This is the composition root: it builds the node's parts from its config and wires them by
events (events.py). The ledger (ledger.py) holds the chain and the mempool; the intake
(intake.py) judges what peers send; the roles (roles/) act on events; status.py answers
what the node shows. Everything that touches the chain runs on the node's asyncio loop;
training runs in the mining worker's threads, re-execution and scoring in one checking thread.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path
from typing import Any

from pouw.blockchain.chain import Chain
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.ml_task import MLTask
from pouw.blockchain.params import ChainParams
from pouw.blockchain.transactions import COIN, BuyTicket, PayForTask, coins
from pouw.config import NodeConfig
from pouw.crypto import KeyPair, sha256
from pouw.economics.reputation import Reputation
from pouw.ml.iteration import configure_determinism
from pouw.monitoring.health import HealthTracker
from pouw.monitoring.metrics import NodeMetrics
from pouw.network import Network
from pouw.node.announcer import Announcer
from pouw.node.backlog import Backlog, MiningHold
from pouw.node.context import Background, Counters, NodeContext
from pouw.node.events import NodeEvents
from pouw.node.identity import check_node_key, load_node_key, network_params
from pouw.node.intake import Intake, restore_models
from pouw.node.ledger import Ledger, NodeNotRunning
from pouw.node.requests import RequestLog, fingerprint
from pouw.node.roles.evaluator import EvaluatorRole
from pouw.node.roles.miner import MinerRole
from pouw.node.roles.screening import ScreeningRole
from pouw.node.roles.supervisor import SupervisorRole
from pouw.node.roles.verifier import VerifierRole
from pouw.node.status import Liveness, NodeStatus
from pouw.node.tally import ChainTally
from pouw.node.tasks import TaskBook
from pouw.node.views import HealthMetrics, TaskView, TicketView
from pouw.roles import NodeRole
from pouw.spec import DEFAULT_FEE, TaskSpec, check_task_spec

log = logging.getLogger(__name__)

TICK_S = 0.5
"""Housekeeping period: IT_RES batches go out, evaluators look again, gauges refresh."""


class PoUWNode:
    def __init__(
        self,
        node_id: str,
        role: NodeRole | str = NodeRole.PEER,
        config: NodeConfig | None = None,
        port: int | None = None,
        *,
        params: ChainParams | None = None,
    ) -> None:
        if config is None:
            config = NodeConfig(node_id=node_id, role=NodeRole.parse(str(role)))
            if port is not None:
                config.port = port
        if config.data_dir == NodeConfig().data_dir:
            config.data_dir = Path(".data") / node_id  # one dir per node, even in one process
        self.node_id = node_id
        self.role = NodeRole.parse(str(role)) if role else config.role
        self.config = config
        self.params = params or network_params(
            config.chain_id, config.genesis_file, config.block_time_ms
        )
        self.key: KeyPair = load_node_key(
            config.data_dir, node_id, self.params.chain_id, config.node_key_file
        )
        check_node_key(
            self.key, node_id, self.params.chain_id, config.node_key_file, config.data_dir
        )
        self.address = self.key.address
        self.metrics = NodeMetrics()
        self.health = HealthTracker()
        self.context = context = NodeContext(
            node_id=node_id,
            role=self.role,
            config=config,
            params=self.params,
            key=self.key,
            metrics=self.metrics,
            counters=Counters(self.metrics),
            reputation=Reputation(),
            tasks=TaskBook(config.data_dir / "models"),
            events=NodeEvents(),
            background=Background(),
        )
        self.announcer = Announcer(context.background)
        self.ledger = Ledger(context, self.announcer)
        self.intake = Intake(context, self.ledger, self.announcer, self.health)
        self.tally = ChainTally(
            context, lambda: self.ledger.chain.state, partial(restore_models, context)
        )
        context.events.transaction_admitted.subscribe(context.tasks.note_payment)
        # The draw decides who evaluates and screens a task, so every node runs those two
        # (the screening first: the evaluator ranks by what it flagged); re-execution and the
        # IT_RES journal follow the configured role.
        self.miner = MinerRole(
            context,
            self.ledger,
            self.announcer,
            MiningHold(self._backlog, lambda stage: self.metrics.mining_held.labels(stage).inc()),
        )
        self.screening = ScreeningRole(context, self.ledger)
        self.evaluator = EvaluatorRole(context, self.ledger, excluded=self.screening.excluded)
        self.verifier = (
            VerifierRole(context, self.ledger, self.announcer, self.intake)
            if self.role == NodeRole.VERIFIER
            else None
        )
        self.supervisor = SupervisorRole(context) if self.role == NodeRole.SUPERVISOR else None
        self.views = NodeStatus(context, self.ledger, self.intake)
        self.requests = RequestLog(config.data_dir)
        self.is_running = False
        self._network: Network | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def chain(self) -> Chain:
        return self.ledger.chain

    @property
    def mempool(self) -> Mempool:
        return self.ledger.mempool

    @property
    def tasks(self) -> TaskBook:
        return self.context.tasks

    @property
    def reputation(self) -> Reputation:
        return self.context.reputation

    @property
    def network(self) -> Network | None:
        return self._network

    def _backlog(self) -> Backlog | None:
        """What the network has yet to hand the node (None before it starts)."""
        network = self._network
        if network is None:
            return None
        return Backlog(network.import_backlog(), network.catching_up())

    @property
    def is_mining(self) -> bool:
        return self.miner.running

    async def start(self) -> None:
        if self.is_running:
            return
        configure_determinism()
        self.context.background.loop = asyncio.get_running_loop()
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger.open()
        self.tally.recount(self.ledger.chain)
        self.ledger.restore_mempool()
        self._network = Network(
            self.key,
            self.intake,
            host=config.host,
            port=config.port,
            bootstrap_peers=[tuple(peer) for peer in config.bootstrap_peers],  # type: ignore[misc]
            max_peers=config.max_peers,
            secure=config.enable_security,
            network_key=_network_key(config.network_key),
            metrics=self.metrics,
        )
        await self._network.start()
        self.announcer.network = self._network
        self.is_running = True
        self.intake.restore_final_models()
        self.ledger.refresh_template()
        self.miner.refresh_job()
        self.context.background.spawn(self._housekeeping())
        log.info("node %s (%s) up at height %d", self.node_id, self.role, self.chain.height)

    async def stop(self) -> None:
        if not self.is_running:
            return
        self.is_running = False
        self.announcer.network = None
        await self.miner.stop()
        self.context.background.cancel()
        if self._network is not None:
            await self._network.stop()
        self.context.background.shutdown()
        self.ledger.close()

    async def start_mining(self) -> None:
        if not self.is_running:
            raise NodeNotRunning("start the node before mining")
        await self.miner.start()

    async def stop_mining(self) -> None:
        await self.miner.stop()

    async def _housekeeping(self) -> None:
        tick = 0
        while self.is_running:
            await asyncio.sleep(TICK_S)
            tick += 1
            self.context.events.tick.emit(tick)
            if tick % 2 == 0:
                self.metrics.peers.set(self._network.peer_count() if self._network else 0)
                self.metrics.tasks_training.set(self.views.tasks_training())

    # -- seed API: staking and tasks -------------------------------------------------------------

    def stake_and_register(self, amount: float, role: NodeRole | str | None = None) -> TicketView:
        """Buy a ticket for `role` (default: this node's role) locking `amount` coins."""
        ticket_role = NodeRole.parse(str(role)) if role else self.role
        tx = self.ledger.submit(BuyTicket(role=ticket_role, amount=coins(amount)))
        return TicketView(tx.txid().hex(), ticket_role.value, amount, self.address, False)

    def account(self, address: str) -> dict[str, Any]:
        account = self.chain.state.account(address)
        pending = sum(1 for tx in self.mempool.transactions() if tx.sender_address == address)
        return {
            "address": address,
            "balance": account.balance / COIN,
            "locked": account.locked / COIN,
            "nonce": account.nonce,
            "next_nonce": account.nonce + pending,
        }

    def relay_transaction(self, encoded: bytes) -> str:
        """A transaction signed elsewhere (a faucet's transfer): admitted and announced."""
        return self.ledger.relay(encoded).txid().hex()

    def stake(
        self, amount: float, role: NodeRole | None = None, request_id: str | None = None
    ) -> TicketView:
        """Buy a ticket; a repeated `request_id` returns the first purchase's ticket (confirmed
        once it is on chain) without buying again; the same id for another purchase is a
        RequestConflict."""
        ticket_role = NodeRole.parse(str(role)) if role else self.role
        body = fingerprint(coins(amount), ticket_role.value)
        if request_id is not None:
            bought = self.requests.answer("stake", request_id, body)
            if bought is not None:
                return self.views.ticket(bytes.fromhex(bought), amount, ticket_role)
        ticket = self.stake_and_register(amount, ticket_role)
        if request_id is not None:
            self.requests.put("stake", request_id, body, ticket.ticket_id)
        return ticket

    async def submit_task(
        self, task: MLTask | TaskSpec, fee: float = DEFAULT_FEE, reward: float | None = None
    ) -> bool:
        """Pay for a task; True once the payment is in the mempool and announced."""
        spec = task.to_spec() if isinstance(task, MLTask) else task
        amount = reward if reward is not None else getattr(task, "reward_amount", 10.0)
        await self.submit_task_spec(spec, amount, fee)
        return True

    async def submit_task_spec(
        self, spec: TaskSpec, reward: float, fee: float, request_id: str | None = None
    ) -> str:
        check_task_spec(spec)
        body = fingerprint(spec, coins(reward), coins(fee))
        if request_id is not None:
            paid = self.requests.answer("tasks", request_id, body)
            if paid is not None:
                return paid
        tx = self.ledger.submit(PayForTask(spec=spec, reward=coins(reward)), fee=fee)
        task_id = tx.txid().hex()
        if request_id is not None:
            self.requests.put("tasks", request_id, body, task_id)
        return task_id

    # -- seed API: status ------------------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        network = self._network
        return self.views.status(
            Liveness(
                running=self.is_running,
                mining=self.is_mining,
                activity=self.miner.activity.describe(),
                stats=self.miner.stats,
                peers=network.peer_count() if network else 0,
                p2p_port=network.port if network and self.is_running else None,
            )
        )

    def get_health_metrics(self) -> HealthMetrics:
        return self.health.snapshot()

    def get_economic_status(self) -> dict[str, Any]:
        return self.views.economics()

    def block_summary(self, height: int) -> dict[str, Any] | None:
        return self.views.block_summary(height)

    def task_views(self) -> list[TaskView]:
        return self.views.task_views()

    def task_view(self, task_id: bytes) -> TaskView | None:
        return self.views.task_view(task_id)

    def task_model(self, task_id: bytes) -> bytes | None:
        return self.views.task_model(task_id)


def _network_key(secret: str | None) -> bytes | None:
    return None if secret is None else sha256(b"pouw-network-secret:" + secret.encode())
