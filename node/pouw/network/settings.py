"""The network's tunables: limits, timings and sizes every part reads, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pouw.budgets import (
    GOSSIP_FRAME_BYTES,
    OUTBOUND_BYTES_PER_PEER,
    OUTBOUND_BYTES_TOTAL,
    RELAY_SEEN_ITEMS,
)


@dataclass(frozen=True)
class NetworkSettings:
    max_message_bytes: int = GOSSIP_FRAME_BYTES
    rate_per_s: float = 2000.0
    """Frames a second one link may send us (token bucket), beyond `burst`."""
    burst: int = 4000
    ban_threshold: int = 100
    ban_seconds: float = 600.0
    ban_decay_per_s: float = 0.1
    """Ban points a link sheds a second: rare honest slips fade, bursts of garbage do not."""
    heartbeat_s: float = 2.0
    peer_timeout_s: float = 10.0
    """A peer silent this long is dropped; a dial unanswered this long has failed."""
    sync_batch: int = 500
    sync_timeout_s: float = 120.0
    """The longest sync() waits."""
    request_timeout_s: float = 5.0
    """An unanswered getdata or getblocks is asked of another peer (or again) after this."""
    exchange_s: float = 30.0
    """Peer exchange period (also on every new connection)."""
    max_dials: int = 8
    """Outbound connections being set up at once."""
    max_backoff_s: float = 30.0
    """Longest wait before redialling a peer that failed (bootstrap peers included)."""
    max_clock_skew_s: float = 600.0
    cache_items: int = 4096
    cache_bytes: int = 64 * 1024 * 1024
    seen_items: int = RELAY_SEEN_ITEMS
    inv_delay_s: float = 0.005
    """Announcements of items other than blocks wait this long to be sent together."""
    import_queue: int = 4096
    serve_bytes: int = 32 * 1024 * 1024
    """Most payload bytes one getdata is answered with."""
    max_queued_bytes: int = OUTBOUND_BYTES_PER_PEER
    """Bytes queued to one peer unread before it is dropped (pouw.budgets)."""
    max_queued_bytes_total: int = OUTBOUND_BYTES_TOTAL
    partition_file: Path | None = None
    """Fault injection for tests (faults.py): a file of peer addresses to cut this node off
    from, re-read every heartbeat. None: POUW_FAULT_PARTITION_FILE when set, else no file."""
