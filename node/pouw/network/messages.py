"""What peers say to each other: one signed envelope type carrying typed bodies.

Every frame is an Envelope (msgpack via msgspec, array-encoded): protocol version, message
type, the sender's ed25519 key, a timestamp, the encoded body and a signature (as
`SignedKind.ENVELOPE` on the chain) over all of them, so a message signed for one chain is
worthless on another, and a frame's signature is no other kind of statement. `open_frame`
checks size, shape, version, signature and type, in that order, before it decodes the body
into a bounded typed struct; every refusal is a `DropMessage` whose reason (drops.py) is the
metric label and sets the ban points.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from pouw.crypto import KeyPair, SignedKind, canonical_bytes, sha256, verify_as
from pouw.errors import PouwError
from pouw.network.drops import DropReason

PROTOCOL_VERSION: Final = 1
MAX_IDS: Final = 1024
"""Item ids in one inv or getdata."""
MAX_BLOCKS: Final = 1000
"""Blocks in one sync reply (and the largest limit a getblocks may ask for)."""
MAX_LOCATOR: Final = 128
MAX_ADDRESSES: Final = 256
CHALLENGE_SIZE: Final = 32
ENVELOPE_OVERHEAD: Final = 4096
"""Bytes kept free in a frame for the envelope around a payload."""


class ItemKind(StrEnum):
    BLOCK = "block"
    TX = "tx"
    ITERATION = "iteration"
    MODEL = "model"
    VERDICT = "verdict"


@dataclass(frozen=True)
class ChainInfo:
    chain_id: str
    genesis_hash: bytes
    height: int
    tip_hash: bytes
    total_work: int


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    KNOWN = "known"
    REJECTED = "rejected"
    ORPHAN = "orphan"


@dataclass(frozen=True)
class ItemResult:
    verdict: Verdict
    reason: str = ""
    """For REJECTED: the rule the item broke, e.g. "bad_signature" (a metric label)."""


Hash = Annotated[bytes, Meta(min_length=32, max_length=32)]
Host = Annotated[str, Meta(max_length=255)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Address = tuple[Host, Port]
UInt63 = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Work = UInt63


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    version: UInt63
    type: Annotated[str, Meta(max_length=32)]
    sender: Annotated[bytes, Meta(min_length=32, max_length=32)]
    timestamp_ms: UInt63
    body: bytes
    signature: Annotated[bytes, Meta(max_length=64)] = b""

    def signed_body(self) -> bytes:
        head = canonical_bytes((self.version, self.type, self.sender, self.timestamp_ms))
        return head + sha256(self.body)


def sign_envelope(key: KeyPair, chain_id: str, envelope: Envelope) -> Envelope:
    signature = key.sign_as(SignedKind.ENVELOPE, chain_id, envelope.signed_body())
    return msgspec.structs.replace(envelope, signature=signature)


class Hello(msgspec.Struct, frozen=True, array_like=True):
    """The handshake: which chain we are on, how far we are, where we listen; and the proof
    that the sender holds its key on this very link: `challenge` is the sender's fresh nonce
    for this link, `answer` the sender's signature over the receiver's challenge
    (`challenge_body`; empty until the sender has heard it)."""

    chain_id: Annotated[str, Meta(max_length=64)]
    genesis_hash: Hash
    height: UInt63
    tip_hash: Hash
    total_work: Work
    listen_host: Host
    listen_port: Port
    challenge: Annotated[bytes, Meta(min_length=CHALLENGE_SIZE, max_length=CHALLENGE_SIZE)]
    answer: Annotated[bytes, Meta(max_length=64)] = b""


def challenge_body(challenge: bytes, recipient: bytes) -> bytes:
    """What an answer signs (as `SignedKind.HELLO`): the challenge and whom it answers, so an
    answer given to one node proves nothing to another."""
    return canonical_bytes((challenge, recipient))


def answer_challenge(key: KeyPair, chain_id: str, challenge: bytes, recipient: bytes) -> bytes:
    return key.sign_as(SignedKind.HELLO, chain_id, challenge_body(challenge, recipient))


def answers_challenge(
    chain_id: str, sender: bytes, answer: bytes, challenge: bytes, recipient: bytes
) -> bool:
    """Whether `answer` is `sender`'s answer to `challenge`, given to `recipient`."""
    body = challenge_body(challenge, recipient)
    return verify_as(SignedKind.HELLO, chain_id, sender, answer, body)


class Ping(msgspec.Struct, frozen=True, array_like=True):
    """A heartbeat; it carries our tip so that a peer which fell behind notices and syncs."""

    nonce: UInt63
    height: UInt63
    tip_hash: Hash
    total_work: Work


class Pong(msgspec.Struct, frozen=True, array_like=True):
    nonce: UInt63
    height: UInt63
    tip_hash: Hash
    total_work: Work


class Peers(msgspec.Struct, frozen=True, array_like=True):
    """Peer exchange: listen addresses of peers we know."""

    addresses: Annotated[list[Address], Meta(max_length=MAX_ADDRESSES)]


class Bye(msgspec.Struct, frozen=True, array_like=True):
    """We are closing this link ("full", "shutdown", "wrong_chain", "banned"), or, with
    "hello_first", we do not know the sender on this link (we restarted): say hello again."""

    reason: Annotated[str, Meta(max_length=32)]
    addresses: Annotated[list[Address], Meta(max_length=MAX_ADDRESSES)] = []


class Inv(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    ids: Annotated[list[Hash], Meta(min_length=1, max_length=MAX_IDS)]


class GetData(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    ids: Annotated[list[Hash], Meta(min_length=1, max_length=MAX_IDS)]


class Data(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    item_id: Hash
    payload: bytes


class Items(msgspec.Struct, frozen=True, array_like=True):
    """Several requested items in one frame (small ones: one signature for the lot)."""

    kind: ItemKind
    items: Annotated[list[tuple[Hash, bytes]], Meta(min_length=1, max_length=MAX_IDS)]


class GetBlocks(msgspec.Struct, frozen=True, array_like=True):
    locator: Annotated[list[Hash], Meta(min_length=1, max_length=MAX_LOCATOR)]
    limit: Annotated[int, Meta(ge=1, le=MAX_BLOCKS)]


class Blocks(msgspec.Struct, frozen=True, array_like=True):
    blocks: Annotated[list[bytes], Meta(max_length=MAX_BLOCKS)]


Body = Hello | Ping | Pong | Peers | Bye | Inv | GetData | Data | Items | GetBlocks | Blocks
BODY_TYPES: Final[dict[str, type[Any]]] = {
    "hello": Hello,
    "ping": Ping,
    "pong": Pong,
    "peers": Peers,
    "bye": Bye,
    "inv": Inv,
    "getdata": GetData,
    "data": Data,
    "items": Items,
    "getblocks": GetBlocks,
    "blocks": Blocks,
}
TYPE_NAMES: Final[dict[type[Any], str]] = {body: name for name, body in BODY_TYPES.items()}

_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_body_decoders = {name: msgspec.msgpack.Decoder(kind) for name, kind in BODY_TYPES.items()}


class DropMessage(PouwError):
    """A frame we refuse; `reason` is the metric label and sets the ban points: a DropReason,
    or the rule the node says an item broke (ItemResult.reason)."""

    def __init__(self, reason: DropReason | str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def seal(key: KeyPair, chain_id: str, body: Body, timestamp_ms: int) -> bytes:
    """The signed frame carrying `body`."""
    unsigned = Envelope(
        PROTOCOL_VERSION,
        TYPE_NAMES[type(body)],
        key.public_key,
        timestamp_ms,
        canonical_bytes(body),
    )
    return canonical_bytes(sign_envelope(key, chain_id, unsigned))


def open_frame(frame: bytes, chain_id: str, max_bytes: int) -> tuple[Envelope, Body]:
    """Size, shape, version, signature, type and body, in that order."""
    if len(frame) > max_bytes:
        raise DropMessage(DropReason.OVERSIZED, f"{len(frame)} bytes > {max_bytes}")
    try:
        envelope = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise DropMessage(DropReason.MALFORMED, str(error)) from None
    if envelope.version != PROTOCOL_VERSION:
        raise DropMessage(DropReason.BAD_VERSION, str(envelope.version))
    if not verify_as(
        SignedKind.ENVELOPE, chain_id, envelope.sender, envelope.signature, envelope.signed_body()
    ):
        raise DropMessage(DropReason.BAD_SIGNATURE)
    decoder = _body_decoders.get(envelope.type)
    if decoder is None:
        raise DropMessage(DropReason.UNKNOWN_TYPE, envelope.type)
    try:
        body: Body = decoder.decode(envelope.body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise DropMessage(DropReason.MALFORMED, str(error)) from None
    return envelope, body


def message_type(body: Body) -> str:
    return TYPE_NAMES[type(body)]
