"""The ledger state (accounts, tickets, tasks) and its transition function.

Every write goes through `_put_*`, which records the first old value of each key in the open
`StateChanges`; reverting those changes restores the state exactly, which is what reorgs rely
on. The same record tells the store which rows a block touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from pouw.blockchain.block import Block
from pouw.blockchain.draw import Ticket, draw_task
from pouw.blockchain.params import (
    ChainParams,
    bootstrap_task_id,
    devnet_public_keys,
    is_devnet_chain,
)
from pouw.blockchain.settlement import (
    TaskRecord,
    check_task_result,
    check_withdrawal,
    due_for_refund,
    record_result,
    record_withdrawal,
    refunded,
    task_deadline,
)
from pouw.blockchain.slashing import ReexecutionCheck, SlashingRule
from pouw.blockchain.transactions import (
    BuyTicket,
    PayForTask,
    Reward,
    SlashEvidence,
    TaskResult,
    Transaction,
    Transfer,
    WithdrawFromTask,
)
from pouw.crypto import address_of
from pouw.errors import InvalidBlock, InvalidTransaction, Reason
from pouw.roles import NodeRole
from pouw.spec import TaskSpecError, check_task_spec


class Account(msgspec.Struct, frozen=True, array_like=True):
    balance: int = 0
    nonce: int = 0
    locked: int = 0


class Position(msgspec.Struct, frozen=True, array_like=True):
    """How far one ticket's work on one task went on this branch."""

    last: int
    """The last position (`epoch << 32 | iteration`) that sealed a block."""
    segment: int
    """The position its segment starts at."""
    checkpoint_hash: bytes
    """The checkpoint that segment committed to with its first block."""


@dataclass(frozen=True)
class WorkClaim:
    """What a block's iteration claims, once the claim rule (`pouw.mining.claims`) checked it
    against this state: the ticket's work on the task reached `position`."""

    key: bytes
    """task id + ticket id"""
    position: Position


ClaimRule = Callable[[Block, "LedgerState"], "WorkClaim | None"]


class StateChanges(msgspec.Struct):
    """First old value of every key written (None: the key did not exist)."""

    accounts: dict[str, Account | None] = {}
    tickets: dict[bytes, Ticket | None] = {}
    tasks: dict[bytes, TaskRecord | None] = {}
    positions: dict[bytes, Position | None] = {}


@dataclass(frozen=True)
class StateTables:
    accounts: dict[str, Account]
    tickets: dict[bytes, Ticket]
    tasks: dict[bytes, TaskRecord]
    positions: dict[bytes, Position]


class LedgerState:
    def __init__(self, params: ChainParams, reexecution: ReexecutionCheck | None = None) -> None:
        """`reexecution` re-runs a block's iteration for slashing evidence (None: a failed
        re-execution proves nothing here, `pouw.blockchain.slashing`)."""
        self.params = params
        self.accounts: dict[str, Account] = {}
        self.tickets: dict[bytes, Ticket] = {}
        self.tasks: dict[bytes, TaskRecord] = {}
        self.positions: dict[bytes, Position] = {}
        """(task id + ticket id) -> how far that ticket's work on the task went."""
        self.slashing = SlashingRule(reexecution)
        self._changes: StateChanges | None = None

    @classmethod
    def genesis(
        cls, params: ChainParams, reexecution: ReexecutionCheck | None = None
    ) -> LedgerState:
        state = cls(params, reexecution)
        task_id = bootstrap_task_id(params)
        if params.bootstrap_task is not None and task_id is not None:
            state.tasks[task_id] = TaskRecord(task_id, "", params.bootstrap_task, 0, 0)
        for allocation in params.allocations:
            current = state.accounts.get(allocation.recipient, Account())
            state.accounts[allocation.recipient] = Account(
                balance=current.balance + allocation.amount
            )
        return state

    def account(self, address: str) -> Account:
        return self.accounts.get(address) or Account()

    def balance(self, address: str) -> int:
        return self.account(address).balance

    def live_tickets(self, role: NodeRole | None = None) -> list[Ticket]:
        return [t for t in self.tickets.values() if role is None or t.role == role]

    def holds_role(self, address: str, *roles: NodeRole) -> bool:
        return any(t.owner == address and t.role in roles for t in self.tickets.values())

    # -- change tracking -------------------------------------------------------------------

    @contextmanager
    def tracking(self) -> Iterator[StateChanges]:
        """Record every write made inside the block; nested use is an error."""
        if self._changes is not None:
            raise RuntimeError("state changes are already being tracked")
        self._changes = StateChanges(accounts={}, tickets={}, tasks={}, positions={})
        try:
            yield self._changes
        finally:
            self._changes = None

    def revert(self, changes: StateChanges) -> None:
        for address, account in changes.accounts.items():
            _restore(self.accounts, address, account)
        for ticket_id, ticket in changes.tickets.items():
            _restore(self.tickets, ticket_id, ticket)
        for task_id, task in changes.tasks.items():
            _restore(self.tasks, task_id, task)
        for key, position in changes.positions.items():
            _restore(self.positions, key, position)

    def _put_account(self, address: str, account: Account) -> None:
        assert self._changes is not None, "state writes happen inside tracking()"
        if address not in self._changes.accounts:
            self._changes.accounts[address] = self.accounts.get(address)
        self.accounts[address] = account

    def _put_ticket(self, ticket_id: bytes, ticket: Ticket | None) -> None:
        assert self._changes is not None, "state writes happen inside tracking()"
        if ticket_id not in self._changes.tickets:
            self._changes.tickets[ticket_id] = self.tickets.get(ticket_id)
        _restore(self.tickets, ticket_id, ticket)

    def _put_task(self, task_id: bytes, task: TaskRecord) -> None:
        assert self._changes is not None, "state writes happen inside tracking()"
        if task_id not in self._changes.tasks:
            self._changes.tasks[task_id] = self.tasks.get(task_id)
        self.tasks[task_id] = task

    def _credit(self, address: str, amount: int) -> None:
        account = self.account(address)
        self._put_account(
            address, msgspec.structs.replace(account, balance=account.balance + amount)
        )

    # -- transitions -----------------------------------------------------------------------

    def apply_block(
        self, block: Block, txids: Sequence[bytes], claim: WorkClaim | None = None
    ) -> StateChanges:
        """Apply a block's work claim, its transactions and the draws it seeds, or leave the
        state as it was and raise InvalidBlock."""
        height = block.header.height
        with self.tracking() as changes:
            try:
                if claim is not None:
                    self._put_position(claim.key, claim.position)
                fees = sum(tx.fee for tx in block.transactions[1:])
                self.apply_reward(block.transactions[0], self.params.block_reward + fees)
                for tx, txid in zip(block.transactions[1:], txids[1:], strict=True):
                    self.apply_transaction(tx, txid, height)
                self._draw_tasks(height, block.hash())
                self._refund_expired(height)
            except InvalidTransaction as error:
                self.revert(changes)
                raise InvalidBlock(error.reason, error.detail, height) from None
        return changes

    def _put_position(self, key: bytes, position: Position) -> None:
        assert self._changes is not None, "state writes happen inside tracking()"
        if key not in self._changes.positions:
            self._changes.positions[key] = self.positions.get(key)
        self.positions[key] = position

    def _draw_tasks(self, height: int, block_hash: bytes) -> None:
        confirmed_at = height - self.params.draw_delay
        due = [
            task
            for task in self.tasks.values()
            if task.height == confirmed_at and task.drawn is None and task.client
        ]
        if not due:
            return
        tickets = list(self.tickets.values())
        for task in due:
            drawn = draw_task(
                tickets, task.task_id, task.spec.miners, confirmed_at, block_hash, height
            )
            self._put_task(task.task_id, msgspec.structs.replace(task, drawn=drawn))

    def _refund_expired(self, height: int) -> None:
        for task in due_for_refund(self.tasks.values(), height):
            self._close(refunded(task, height))

    def _close(self, task: TaskRecord) -> None:
        """Write the task's record; if it just closed, pay what its record says."""
        self._put_task(task.task_id, task)
        if task.status != "open":
            for payout in task.payouts:
                self._credit(payout.recipient, payout.amount)

    def apply_reward(self, tx: Transaction, expected_amount: int) -> None:
        payload = tx.payload
        if not isinstance(payload, Reward) or tx.sender or tx.signature or tx.fee:
            raise InvalidTransaction(Reason.BAD_REWARD, "a block starts with one unsigned reward")
        if payload.amount != expected_amount:
            raise InvalidTransaction(
                Reason.BAD_REWARD,
                f"reward {payload.amount} != block reward plus fees {expected_amount}",
            )
        self._credit(payload.recipient, payload.amount)

    def apply_transaction(
        self, tx: Transaction, txid: bytes, height: int, *, signature_checked: bool = False
    ) -> None:
        """Validate a signed transaction against this state and apply it, or raise with a reason.
        `signature_checked`: the caller verified this very transaction's signature already (the
        mempool, at admission), so it is not verified again."""
        payload = tx.payload
        if isinstance(payload, Reward):
            raise InvalidTransaction(Reason.UNEXPECTED_REWARD, "a reward may only open a block")
        if not signature_checked and not tx.has_valid_signature(self.params.chain_id, txid):
            raise InvalidTransaction(Reason.BAD_SIGNATURE, f"tx {txid.hex()[:16]}")
        self.check_signer(tx)
        sender = address_of(tx.sender)
        account = self.account(sender)
        if tx.nonce != account.nonce:
            reason = Reason.REPLAY if tx.nonce < account.nonce else Reason.NONCE_GAP
            raise InvalidTransaction(reason, f"nonce {tx.nonce}, account expects {account.nonce}")
        spend = tx.fee + _amount_spent(payload)
        if spend > account.balance:
            raise InvalidTransaction(
                Reason.OVERSPEND, f"spends {spend}, balance is {account.balance}"
            )
        self.check_payload(payload, sender)
        locked = account.locked + (payload.amount if isinstance(payload, BuyTicket) else 0)
        self._put_account(
            sender, Account(balance=account.balance - spend, nonce=account.nonce + 1, locked=locked)
        )
        self._apply_payload(payload, tx, txid, sender, height)

    def check_signer(self, tx: Transaction) -> None:
        """Off devnet chains a devnet account's key signs nothing: its seed is public, so any
        coins a genesis gave it would be anyone's."""
        if tx.sender in devnet_public_keys() and not is_devnet_chain(self.params.chain_id):
            raise InvalidTransaction(
                Reason.DEVNET_KEY,
                f"{address_of(tx.sender)} is a public devnet key, refused on chain "
                f"{self.params.chain_id!r}",
            )

    def check_payload(self, payload: object, sender: str) -> None:
        """The payload's own rules, against this state; signature, nonce and balance aside."""
        if isinstance(payload, Transfer) and payload.amount <= 0:
            raise InvalidTransaction(Reason.ZERO_AMOUNT, "a transfer moves a positive amount")
        if isinstance(payload, PayForTask):
            if payload.reward <= 0:
                raise InvalidTransaction(Reason.ZERO_AMOUNT, "a task pays a positive reward")
            try:
                check_task_spec(payload.spec)
            except TaskSpecError as error:
                raise InvalidTransaction(Reason.INVALID_TASK_SPEC, str(error)) from None
        if isinstance(payload, BuyTicket) and payload.amount < self.params.min_stake:
            raise InvalidTransaction(
                Reason.STAKE_BELOW_MINIMUM,
                f"stake {payload.amount} < minimum {self.params.min_stake}",
            )
        if isinstance(payload, TaskResult):
            check_task_result(
                self.tasks.get(payload.task_id),
                payload,
                sender,
                self.tickets,
                self.params.chain_id,
            )
        if isinstance(payload, WithdrawFromTask):
            check_withdrawal(self.tasks.get(payload.task_id), payload, sender, self.tickets)
        if isinstance(payload, SlashEvidence):
            self.slashing.check(payload, sender, self)

    def _apply_payload(
        self, payload: object, tx: Transaction, txid: bytes, sender: str, height: int
    ) -> None:
        if isinstance(payload, Transfer):
            self._credit(payload.recipient, payload.amount)
        elif isinstance(payload, PayForTask):
            record = TaskRecord(txid, sender, payload.spec, payload.reward, height)
            deadline = task_deadline(self.params, height)
            self._put_task(txid, msgspec.structs.replace(record, deadline=deadline))
        elif isinstance(payload, BuyTicket):
            ticket = Ticket(
                txid, sender, tx.sender, payload.role, payload.amount, height, payload.preferences
            )
            self._put_ticket(txid, ticket)
        elif isinstance(payload, TaskResult):
            task = self.tasks[payload.task_id]
            self._close(record_result(task, payload, sender, height))
        elif isinstance(payload, WithdrawFromTask):
            task = self.tasks[payload.task_id]
            self._close(record_withdrawal(task, payload, sender, self.tickets, height))
        elif isinstance(payload, SlashEvidence):
            self._confiscate(self.tickets[payload.ticket_id], reporter=sender)

    def _confiscate(self, ticket: Ticket, reporter: str) -> None:
        """The stake is taken: a share rewards the reporter, the rest is burned."""
        owner = self.account(ticket.owner)
        self._put_account(
            ticket.owner, msgspec.structs.replace(owner, locked=owner.locked - ticket.amount)
        )
        self._put_ticket(ticket.ticket_id, None)
        self._credit(reporter, ticket.amount * self.params.slash_reporter_share_percent // 100)

    def tables(self) -> StateTables:
        """The live tables, not a copy."""
        return StateTables(self.accounts, self.tickets, self.tasks, self.positions)

    def snapshot(self) -> StateTables:
        """A copy of the tables, for comparisons."""
        return StateTables(
            dict(self.accounts), dict(self.tickets), dict(self.tasks), dict(self.positions)
        )

    def load(self, tables: StateTables) -> None:
        self.accounts, self.tickets, self.tasks, self.positions = (
            tables.accounts,
            tables.tickets,
            tables.tasks,
            tables.positions,
        )


def payload_rules_read_state(payload: object) -> bool:
    """Whether `check_payload` reads the tasks and tickets: the other payloads' rules depend on
    the payload and the chain parameters alone."""
    return isinstance(payload, TaskResult | WithdrawFromTask | SlashEvidence)


def _amount_spent(payload: object) -> int:
    if isinstance(payload, Transfer | BuyTicket):
        return payload.amount
    if isinstance(payload, PayForTask):
        return payload.reward
    return 0


K = TypeVar("K")
V = TypeVar("V")


def _restore(table: dict[K, V], key: K, value: V | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
