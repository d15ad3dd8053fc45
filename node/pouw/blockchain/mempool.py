"""Pending transactions: bounded, ordered by fee, each sender's transactions kept in nonce order.

Admission checks a transaction against the state plus the sender's pending transactions before
it, by the rules a block applies (signature, nonce sequence, balance, and the payload's own rules),
so that nothing is admitted that no block could hold. A sender has at most `max_per_sender`
transactions and `max_bytes_per_sender` bytes pending. A pool full by count or by bytes
(`max_bytes`) evicts its lowest-fee transaction, with that sender's later transactions, which
could no longer be mined, for a better-paying newcomer.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from pouw.blockchain.block import Block
from pouw.blockchain.state import LedgerState, payload_rules_read_state
from pouw.blockchain.transactions import (
    BuyTicket,
    PayForTask,
    Reward,
    Transaction,
    Transfer,
    encode_transaction,
)
from pouw.budgets import MEMPOOL_BYTES_PER_SENDER, MEMPOOL_BYTES_TOTAL
from pouw.crypto import address_of
from pouw.errors import InvalidTransaction, Reason


@dataclass(order=True, frozen=True)
class _Entry:
    sort_key: tuple[int, int] = field(init=True)
    txid: bytes = field(compare=False)
    tx: Transaction = field(compare=False)
    sender: str = field(compare=False)
    size: int = field(compare=False)


def _sort_key(entry: _Entry) -> tuple[int, int]:
    return entry.sort_key


TRIAL_HEIGHT = 0
"""The height a trial apply records in the tasks and tickets it creates; none of the rules read
it, and the trial is reverted."""


def _spend(tx: Transaction) -> int:
    payload = tx.payload
    amount = payload.reward if isinstance(payload, PayForTask) else 0
    if isinstance(payload, Transfer | BuyTicket):
        amount = payload.amount
    return tx.fee + amount


def _check_payload(
    tx: Transaction, sender: str, pending: dict[int, _Entry], state: LedgerState
) -> None:
    """The payload's rules, as a block applies them: those that read the tasks and tickets see
    them as the sender's pending transactions ahead of this one leave them (a ticket bought, a
    task paid for or already closed), as far as those still apply."""
    if not payload_rules_read_state(tx.payload):
        state.check_payload(tx.payload, sender)
        return
    ahead = [pending[nonce] for nonce in sorted(pending) if nonce < tx.nonce]
    with state.tracking() as changes:
        try:
            _apply_while_valid(ahead, state)
            state.check_payload(tx.payload, sender)
        finally:
            state.revert(changes)


def _apply_while_valid(entries: list[_Entry], state: LedgerState) -> None:
    """Apply the entries in order up to the first that no longer applies (the tip moved since
    its admission): none after it can apply either until it is replaced."""
    for entry in entries:
        try:
            state.apply_transaction(entry.tx, entry.txid, TRIAL_HEIGHT, signature_checked=True)
        except InvalidTransaction:
            return


class Mempool:
    def __init__(
        self,
        max_transactions: int = 10_000,
        max_per_sender: int = 64,
        *,
        max_bytes: int = MEMPOOL_BYTES_TOTAL,
        max_bytes_per_sender: int = MEMPOOL_BYTES_PER_SENDER,
    ) -> None:
        self.max_transactions = max_transactions
        self.max_per_sender = max_per_sender
        self.max_bytes = max_bytes
        self.max_bytes_per_sender = max_bytes_per_sender
        self.bytes = 0
        """Encoded bytes of the transactions pending."""
        self._by_id: dict[bytes, _Entry] = {}
        self._by_sender: dict[str, dict[int, _Entry]] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_id

    def get(self, txid: bytes) -> Transaction | None:
        entry = self._by_id.get(txid)
        return None if entry is None else entry.tx

    def transactions(self) -> list[Transaction]:
        return [entry.tx for entry in self._by_id.values()]

    def add(self, tx: Transaction, state: LedgerState, size: int | None = None) -> bytes:
        """Admit a transaction or raise InvalidTransaction with the reason."""
        txid = tx.txid()
        size = size if size is not None else len(encode_transaction(tx))
        if txid in self._by_id:
            raise InvalidTransaction(Reason.DUPLICATE, "already in the mempool")
        if isinstance(tx.payload, Reward):
            raise InvalidTransaction(
                Reason.UNEXPECTED_REWARD, "rewards are made by block producers"
            )
        if not tx.has_valid_signature(state.params.chain_id, txid):
            raise InvalidTransaction(Reason.BAD_SIGNATURE, f"tx {txid.hex()[:16]}")
        state.check_signer(tx)
        sender = address_of(tx.sender)
        account = state.account(sender)
        pending = self._by_sender.get(sender, {})
        if tx.nonce < account.nonce:
            raise InvalidTransaction(
                Reason.REPLAY, f"nonce {tx.nonce}, account is at {account.nonce}"
            )
        if tx.nonce > account.nonce + len(pending):
            raise InvalidTransaction(
                Reason.NONCE_GAP, f"nonce {tx.nonce}, next is {account.nonce + len(pending)}"
            )
        replaced = pending.get(tx.nonce)
        if replaced is not None and tx.fee <= replaced.tx.fee:
            raise InvalidTransaction(Reason.DUPLICATE_NONCE, "a replacement must pay a higher fee")
        if replaced is None and len(pending) >= self.max_per_sender:
            raise InvalidTransaction(
                Reason.TOO_MANY_PENDING, f"{len(pending)} pending, at most {self.max_per_sender}"
            )
        held = sum(e.size for n, e in pending.items() if n != tx.nonce)
        if held + size > self.max_bytes_per_sender:
            raise InvalidTransaction(
                Reason.TOO_MANY_PENDING,
                f"{held + size} bytes pending, at most {self.max_bytes_per_sender}",
            )
        committed = sum(_spend(e.tx) for n, e in pending.items() if n < tx.nonce)
        if committed + _spend(tx) > account.balance:
            raise InvalidTransaction(Reason.OVERSPEND, f"balance {account.balance} cannot cover it")
        _check_payload(tx, sender, pending, state)
        replacing = [e for n, e in pending.items() if n >= tx.nonce] if replaced else []
        self._check_room(tx.fee, sender, size, replacing)
        if replaced is not None:
            self._remove_from(sender, tx.nonce)
        while len(self._by_id) >= self.max_transactions or self.bytes + size > self.max_bytes:
            self._make_room_for(tx.fee)
        self._arrivals += 1
        entry = _Entry((-tx.fee, self._arrivals), txid, tx, sender, size)
        self._by_id[txid] = entry
        self.bytes += size
        self._by_sender.setdefault(sender, {})[tx.nonce] = entry
        return txid

    def _check_room(self, fee: int, sender: str, size: int, replacing: list[_Entry]) -> None:
        """Raise `mempool_full`, before anything is removed, unless evicting lower fees makes
        room for `size` more bytes (`replacing` leaving); never by evicting the sender's own
        earlier transactions, which would leave the newcomer unminable behind a gap."""
        gone = {entry.txid for entry in replacing}
        count = len(self._by_id) - len(gone)
        used = self.bytes - sum(entry.size for entry in replacing)
        while count >= self.max_transactions or used + size > self.max_bytes:
            left = (e for e in self._by_id.values() if e.txid not in gone)
            cheapest = max(left if gone else self._by_id.values(), key=_sort_key)
            if cheapest.tx.fee >= fee or cheapest.sender == sender:
                raise InvalidTransaction(
                    Reason.MEMPOOL_FULL, f"fee {fee} does not beat the lowest {cheapest.tx.fee}"
                )
            nonces = self._by_sender[cheapest.sender]
            for entry in (e for n, e in nonces.items() if n >= cheapest.tx.nonce):
                gone.add(entry.txid)
                count, used = count - 1, used - entry.size

    def _make_room_for(self, fee: int) -> None:
        cheapest = max(self._by_id.values(), key=_sort_key)  # plain tuples compare fast
        if cheapest.tx.fee >= fee:
            raise InvalidTransaction(
                Reason.MEMPOOL_FULL, f"fee {fee} does not beat the lowest {cheapest.tx.fee}"
            )
        self._remove_from(cheapest.sender, cheapest.tx.nonce)

    def _remove_from(self, sender: str, nonce: int) -> None:
        """Remove a sender's transaction at `nonce` and every later one of theirs."""
        pending = self._by_sender.get(sender, {})
        for later in [n for n in pending if n >= nonce]:
            self._forget(pending.pop(later))
        if not pending:
            self._by_sender.pop(sender, None)

    def _forget(self, entry: _Entry) -> None:
        del self._by_id[entry.txid]
        self.bytes -= entry.size

    def select(self, state: LedgerState, max_bytes: int, height: int) -> list[Transaction]:
        """The best-paying transactions that apply in order to `state`, within `max_bytes`.

        Each is trial-applied, so the selection is valid as a block body; the state is left as
        it was. Signatures were verified at admission and are not verified again (a verification
        costs more than the rest of the trial)."""
        heads: list[_Entry] = []
        for pending in self._by_sender.values():
            heapq.heappush(heads, pending[min(pending)])
        chosen: list[Transaction] = []
        used = 0
        with state.tracking() as changes:
            try:
                while heads:
                    entry = heapq.heappop(heads)
                    if used + entry.size > max_bytes:
                        continue
                    try:
                        state.apply_transaction(
                            entry.tx, entry.txid, height, signature_checked=True
                        )
                    except InvalidTransaction:
                        continue
                    chosen.append(entry.tx)
                    used += entry.size
                    successor = self._by_sender[entry.sender].get(entry.tx.nonce + 1)
                    if successor is not None:
                        heapq.heappush(heads, successor)
            finally:
                state.revert(changes)
        return chosen

    def remove_confirmed(self, blocks: Iterable[Block], state: LedgerState) -> None:
        """Drop what the new blocks included and whatever their state made stale."""
        for block in blocks:
            for tx in block.transactions:
                entry = self._by_id.get(tx.txid())
                if entry is not None:
                    self._forget(entry)
                    del self._by_sender[entry.sender][entry.tx.nonce]
        for sender in list(self._by_sender):
            next_nonce = state.account(sender).nonce
            pending = self._by_sender[sender]
            for nonce in [n for n in pending if n < next_nonce]:
                self._forget(pending.pop(nonce))
            if not pending:
                del self._by_sender[sender]

    def readmit(self, blocks: Iterable[Block], state: LedgerState) -> None:
        """After a reorg, offer the disconnected blocks' transactions again (oldest first)."""
        for block in blocks:
            for tx in block.transactions[1:]:
                try:
                    self.add(tx, state)
                except InvalidTransaction:
                    continue
