"""Byte budgets: what peers can make a node keep (in memory, on disk) or send, counted in
bytes, per sender and in total. Every size is here, with the reason for it; each store a peer
fills owns a `ByteBudget` and asks it before it keeps anything.

A budget refuses what does not fit rather than evicting what it holds: what a node accepted is
never lost to a flood that came later. A sender is the key that signed the item (a miner, a
verifier) or the peer that sent it; an item past its sender's share is the sender's fault, an
item past the total is not (it may be an honest latecomer, see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from pouw.errors import Reason
from pouw.spec import MAX_MODEL_PARAMETERS, ModelSpec, model_parameters

MIB: Final = 1 << 20

GOSSIP_FRAME_BYTES: Final = 16 * MIB
"""The largest frame a node sends or takes (NetworkSettings.max_message_bytes): no single item
from a peer is larger, so every budget below holds at least one of the largest."""

SAFETENSORS_HEADER_BYTES_PER_TENSOR: Final = 128
"""A safetensors blob's JSON header names each tensor with its dtype, shape and offsets: under
100 bytes for the largest of a spec's (`"14.weight":{"dtype":"F32","shape":[...],...}`)."""
FINAL_MODEL_ITEM_BYTES: Final = 4096
"""The signed FinalModel item kept beside its model (keys, hashes, signature: about 250 bytes)."""


def final_model_bytes(model: ModelSpec) -> int:
    """The largest final model a task of this model can have: its float32 parameters as
    safetensors (8-byte length, header, data), two tensors per layer (weight, bias)."""
    tensors = 2 * len(model.layers)
    return 8 + SAFETENSORS_HEADER_BYTES_PER_TENSOR * tensors + 4 * model_parameters(model)


LARGEST_FINAL_MODEL_BYTES: Final = (
    8 + SAFETENSORS_HEADER_BYTES_PER_TENSOR * 2 * 16 + 4 * MAX_MODEL_PARAMETERS
)
"""A spec's largest model (16 Mi parameters, 16 layers): 64 MiB and 4 KiB."""

FINAL_MODEL_BYTES_PER_SENDER: Final = 4 * (LARGEST_FINAL_MODEL_BYTES + FINAL_MODEL_ITEM_BYTES)
"""A miner's final models over the tasks open at once, one per task it was drawn for: four of
the largest, so a legitimate model is never refused for its size (only drawn miners send
final models at all, and a miner seats a task with a staked ticket)."""
FINAL_MODEL_BYTES_TOTAL: Final = 1024 * MIB
"""Every miner's final models, on disk (memory keeps only their items; the evaluator reads
the bytes back to score them): five tasks of three miners' largest models, or thousands of
small ones (the digits MLP's is 70 KB). A task's closing gives its bytes back."""

WAITING_MODEL_BYTES_PER_SENDER: Final = 2 * GOSSIP_FRAME_BYTES
WAITING_MODEL_BYTES_TOTAL: Final = 4 * GOSSIP_FRAME_BYTES
"""Final models for a task this node does not know or has not drawn yet (it is syncing), held
until the chain says whether their senders were drawn: a few frames' worth, since gossip
carries at most one frame a model; a miner's key is its sender here."""
WAITING_MODEL_BLOCKS: Final = 100
"""Blocks a waiting final model's task may stay unknown before the model is let go."""
PROGRESS_MINERS_PER_TASK: Final = 256
"""Miners whose progress a node keeps per task (about 300 bytes each): a task seats at most 64;
iterations from the 257th address on leave nothing behind."""

ITERATION_JOURNAL_BYTES_PER_SENDER: Final = 256 * MIB
"""IT_RES records a supervisor keeps of one miner in one task, on disk: a 16 MiB-update
miner's 16 iterations, or a small model's hundreds of thousands (the digits MLP's compressed
record is about 1 KB)."""
ITERATION_JOURNAL_BYTES_TOTAL: Final = 4096 * MIB
"""All IT_RES records on a supervisor's disk: 16 miners at their full share. Journals are not
pruned: a supervisor that reaches it journals nothing more until they are."""

RECENT_ITEM_BYTES_PER_KIND: Final = 2 * GOSSIP_FRAME_BYTES
"""Items a node keeps, per kind, to answer peers' getdata (the announcer's cache; the oldest
go first, it is a cache, not a store): a few of the largest or thousands of small ones."""

OUTBOUND_BYTES_PER_PEER: Final = 4 * GOSSIP_FRAME_BYTES
"""Bytes queued to one peer and not yet written to its socket: an honest peer's ZeroMQ reads
whatever arrives, so it holds at most a sync batch and a few items in flight; past this the
peer is not reading and is dropped."""
OUTBOUND_BYTES_TOTAL: Final = 16 * GOSSIP_FRAME_BYTES
"""Bytes queued to every peer together, also to links already closed that ZeroMQ still holds
(a ROUTER keeps a silent peer's queue until its TCP connection ends)."""

MEMPOOL_BYTES_PER_SENDER: Final = 4 * MIB
"""A sender's pending transactions: its 64 (the count bound) of ordinary size, or a few slashes
with their 1 MiB of evidence; more waits until blocks take some."""
MEMPOOL_BYTES_TOTAL: Final = 64 * MIB
"""All pending transactions: 32 full blocks (2 MiB each); past it the lowest fee goes."""

IMPORT_BYTES_PER_PEER: Final = 4 * GOSSIP_FRAME_BYTES
"""Items and sync batches of one peer waiting to be judged: a sync batch and a few large items
(an honest peer sends only what we asked for)."""
IMPORT_BYTES_TOTAL: Final = 16 * GOSSIP_FRAME_BYTES
"""All peers' items waiting to be judged; past it an item is refused as overloaded and fetched
again on a later announcement."""

# Fixed-size entries are bounded by count; their bytes are the count times about 210 bytes (a
# kind and a 32-byte id in an ordered dict, measured with tracemalloc).
RELAY_SEEN_ITEMS: Final = 65_536
"""Items the relay knows it has (never fetched again): about 14 MB."""
RELAY_REQUESTS: Final = 65_536
"""Items asked of a peer and not arrived; an inv beyond it is ignored until they drain: about
20 MB with their announcers."""
RELAY_DEFERRED: Final = 65_536
"""Announcements waiting for room in the import queue, oldest forgotten first: about 14 MB."""
KNOWN_ITEMS_PER_LINK: Final = 4096
"""Items a peer is known to have (never announced to it): about 1 MB a link."""

SERVE_AGAIN_AFTER_S: Final = 10.0
"""A getdata for an item this node sent the same link less than this ago is not answered
again: twice the request timeout, after which an honest peer asks someone else."""


S = TypeVar("S", bound=Hashable)
K = TypeVar("K", bound=Hashable)


@dataclass
class ByteBudget(Generic[S, K]):
    """Bytes kept per sender and in total, each charge under the key of what it holds."""

    per_sender: int
    total: int
    used: int = 0
    _by_sender: dict[S, int] = field(default_factory=dict)
    _charges: dict[K, tuple[S, int]] = field(default_factory=dict)

    def refusal(self, sender: S, size: int, replacing: K | None = None) -> Reason | None:
        """Why `size` more bytes of `sender` (in place of `replacing`, if given) do not fit;
        None when they do."""
        freed = 0
        if replacing is not None and replacing in self._charges:
            owner, freed = self._charges[replacing]
            freed = freed if owner == sender else 0
        if self.of(sender) - freed + size > self.per_sender:
            return Reason.OVER_SENDER_BUDGET
        if self.used - freed + size > self.total:
            return Reason.STORE_FULL
        return None

    def charge(self, key: K, sender: S, size: int) -> Reason | None:
        """Keep `size` bytes of `sender` under `key` (replacing what `key` held), or say why
        not and keep nothing."""
        refused = self.refusal(sender, size, replacing=key)
        if refused is not None:
            return refused
        self.release(key)
        self._charges[key] = (sender, size)
        self._by_sender[sender] = self.of(sender) + size
        self.used += size
        return None

    def add(self, key: K, sender: S, size: int) -> None:
        """Grow `key`'s charge by `size` (an append the caller checked with `refusal`)."""
        owner, held = self._charges.get(key, (sender, 0))
        self._charges[key] = (owner, held + size)
        self._by_sender[owner] = self.of(owner) + size
        self.used += size

    def release(self, key: K) -> None:
        charge = self._charges.pop(key, None)
        if charge is None:
            return
        sender, size = charge
        self.used -= size
        left = self.of(sender) - size
        if left > 0:
            self._by_sender[sender] = left
        else:
            self._by_sender.pop(sender, None)

    def of(self, sender: S) -> int:
        """Bytes `sender` holds."""
        return self._by_sender.get(sender, 0)

    def holds(self, key: K) -> bool:
        return key in self._charges
