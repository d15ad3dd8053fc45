"""Block locators and the blocks a peer is missing: how chain sync finds the fork point."""

from __future__ import annotations

from pouw.blockchain.chain import Chain

DENSE_TIP = 10
"""Locator entries one apart below the tip before they start doubling."""


def block_locator(chain: Chain) -> list[bytes]:
    """Main-chain hashes from the tip back to genesis: dense near the tip, then doubling."""
    hashes = chain.main_hashes()
    locator: list[bytes] = []
    step, index = 1, len(hashes) - 1
    while index > 0:
        locator.append(hashes[index])
        if len(locator) >= DENSE_TIP:
            step *= 2
        index -= step
    locator.append(hashes[0])
    return locator


def blocks_after(chain: Chain, locator: list[bytes], limit: int) -> list[bytes]:
    """Encoded main-chain blocks after the first locator hash on our main chain."""
    start = 0
    for block_hash in locator:
        entry = chain.entry(block_hash)
        if entry is not None and chain.is_main(block_hash):
            start = entry.height
            break
    blocks = []
    for height in range(start + 1, min(chain.height, start + limit) + 1):
        at_height = chain.hash_at(height)
        encoded = chain.store.block_bytes(at_height) if at_height else None
        if encoded is None:
            break
        blocks.append(encoded)
    return blocks
