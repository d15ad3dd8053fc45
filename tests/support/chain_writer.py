"""A process that writes blocks with transactions into a data dir until it is killed.

Used by the crash-safety test, which kill -9s it at random moments. Seals with the test-only
placeholder seal.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pouw.blockchain.block import Block
from tests.support.ledger import ALICE, BOB, CAROL, ledger_params, make_block, open_chain, transfer


def main(data_dir: str) -> None:
    chain = open_chain(Path(data_dir), ledger_params())
    while True:
        height = chain.height
        if height % 3 == 2:
            _fork_and_reorg(chain)
            continue
        nonce = chain.state.account(ALICE.address).nonce
        txs = [transfer(ALICE, BOB, 1 + i, nonce=nonce + i) for i in range(20)]
        chain.add_block(make_block(chain, txs))
        print(chain.height, flush=True)


def _fork_and_reorg(chain: object) -> None:
    """Mine a heavier two-block branch off the parent of the tip, forcing a reorg."""
    from pouw.blockchain.chain import Chain

    assert isinstance(chain, Chain)
    parent = chain.hash_at(chain.height - 1)
    assert parent is not None
    nonce = chain.state.account(CAROL.address).nonce
    first: Block = make_block(
        chain, [transfer(CAROL, BOB, 5, nonce=nonce)], parent=parent, spacing_ms=2_001
    )
    chain.add_block(first)
    chain.add_block(make_block(chain, parent=first.hash(), spacing_ms=2_001))
    print(chain.height, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
