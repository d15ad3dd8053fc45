"""Re-validate a stored chain from genesis, as `pouw chain verify` does.

The audit trusts nothing in the store: it replays every main-chain block through the same
rules a live node applies, then checks that the stored state rows and tip match the replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pouw.blockchain.block import Block, decode_block
from pouw.blockchain.chain import wall_clock_ms
from pouw.blockchain.params import genesis_block
from pouw.blockchain.slashing import ReexecutionCheck
from pouw.blockchain.state import ClaimRule, LedgerState
from pouw.blockchain.store import ChainStore
from pouw.blockchain.validation import SealRule, check_block_alone, check_header_in_context
from pouw.errors import InvalidBlock, MalformedData, Reason


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    height: int
    """The tip height when ok, else the height of the first bad block."""
    reason: str = ""
    tip_hash: bytes = b""

    def describe(self) -> str:
        if self.ok:
            tip = self.tip_hash.hex()[:16]
            return f"chain OK: {self.height + 1} blocks, tip {tip} at height {self.height}"
        return f"chain INVALID at height {self.height}: {self.reason}"


def audit_store(
    data_dir: Path,
    seal_rules: Sequence[SealRule] = (),
    reexecution: ReexecutionCheck | None = None,
    claim_rule: ClaimRule | None = None,
) -> AuditReport:
    """Replay the stored main chain; `claim_rule` as the node applied blocks with it
    (`pouw.mining.claims.ClaimRule`), else the positions it recorded will not match."""
    store = ChainStore(data_dir, read_only=True)
    try:
        return _audit(store, seal_rules, reexecution, claim_rule)
    finally:
        store.close()


def _taken_as_applied(block: Block) -> Reason:
    """Without a re-execution the audit trusts what the node applied: it re-runs no stored
    block, nor the block a failed-re-execution proof carries (its signature, seal and ticket
    are still checked)."""
    del block
    return Reason.UPDATE_MISMATCH


def _audit(
    store: ChainStore,
    seal_rules: Sequence[SealRule],
    reexecution: ReexecutionCheck | None,
    claim_rule: ClaimRule | None,
) -> AuditReport:
    params = store.params()
    if params is None:
        return AuditReport(False, 0, "store holds no chain parameters")
    try:
        main = store.main_chain()
    except ValueError as error:
        return AuditReport(False, 0, str(error))
    if not main or main[0] != genesis_block(params).hash():
        return AuditReport(False, 0, "genesis block does not match the chain parameters")

    state = LedgerState.genesis(params, reexecution or _taken_as_applied)
    headers = [genesis_block(params).header]
    context = max(params.retarget_window + 1, params.median_time_window)
    now_ms = wall_clock_ms()
    for height, block_hash in enumerate(main[1:], start=1):
        encoded = store.block_bytes(block_hash)
        if encoded is None:
            return AuditReport(False, height, "block missing from the store")
        try:
            block = decode_block(encoded)
            if block.hash() != block_hash:
                raise InvalidBlock(
                    Reason.HASH_MISMATCH, "stored body does not hash to its key", height
                )
            txids = [tx.txid() for tx in block.transactions]
            check_block_alone(block, block_hash, txids, len(encoded), params)
            for rule in seal_rules:
                rule(block)
            check_header_in_context(block.header, headers[-context:], params, now_ms)
            claim = claim_rule(block, state) if claim_rule is not None else None
            state.apply_block(block, txids, claim)
        except (InvalidBlock, MalformedData) as error:
            reason = error.reason if isinstance(error, InvalidBlock) else str(error)
            detail = (
                f" ({error.detail})" if isinstance(error, InvalidBlock) and error.detail else ""
            )
            return AuditReport(False, height, reason + detail)
        headers.append(block.header)

    tip = store.tip_hash()
    if tip != main[-1]:
        return AuditReport(False, len(main) - 1, "tip pointer is not the last main-chain block")
    if store.load_state() != state.snapshot():
        return AuditReport(False, len(main) - 1, "stored state differs from the replayed state")
    return AuditReport(True, len(main) - 1, tip_hash=main[-1])
