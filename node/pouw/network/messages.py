"""What peers say to each other: one signed envelope type carrying typed bodies.

Every frame is an Envelope (msgpack via msgspec): protocol version, message type, the
sender's ed25519 key, a timestamp, the encoded body and a signature over all of them under
the chain id. Sizes are checked before decoding; bodies decode into bounded typed structs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from pouw.crypto import KeyPair, canonical_bytes, sha256, verify_signature

PROTOCOL_VERSION: Final = 1
MAX_IDS: Final = 1024
MAX_BLOCKS: Final = 1000


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


Hash = Annotated[bytes, Meta(min_length=32, max_length=32)]
Host = Annotated[str, Meta(max_length=255)]
Port = Annotated[int, Meta(ge=0, le=65535)]


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    version: int
    type: Annotated[str, Meta(max_length=32)]
    sender: Annotated[bytes, Meta(min_length=32, max_length=32)]
    timestamp_ms: int
    body: bytes
    signature: Annotated[bytes, Meta(max_length=64)] = b""

    def signing_digest(self, chain_id: str) -> bytes:
        head = canonical_bytes((self.version, self.type, self.sender, self.timestamp_ms))
        return sha256(b"pouw-p2p\x00" + chain_id.encode() + b"\x00" + head + self.body)


class Hello(msgspec.Struct, frozen=True, array_like=True):
    chain_id: Annotated[str, Meta(max_length=64)]
    genesis_hash: Hash
    height: Annotated[int, Meta(ge=0)]
    tip_hash: Hash
    total_work: Annotated[int, Meta(ge=0)]
    listen_host: Host
    listen_port: Port


class Ping(msgspec.Struct, frozen=True, array_like=True):
    nonce: int


class Pong(msgspec.Struct, frozen=True, array_like=True):
    nonce: int


class Peers(msgspec.Struct, frozen=True, array_like=True):
    addresses: Annotated[list[tuple[Host, Port]], Meta(max_length=256)]


class Inv(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    ids: Annotated[list[Hash], Meta(max_length=MAX_IDS)]


class GetData(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    ids: Annotated[list[Hash], Meta(max_length=MAX_IDS)]


class Data(msgspec.Struct, frozen=True, array_like=True):
    kind: ItemKind
    item_id: Hash
    payload: bytes


class GetBlocks(msgspec.Struct, frozen=True, array_like=True):
    locator: Annotated[list[Hash], Meta(max_length=128)]
    limit: Annotated[int, Meta(ge=1, le=MAX_BLOCKS)]


class Blocks(msgspec.Struct, frozen=True, array_like=True):
    blocks: Annotated[list[bytes], Meta(max_length=MAX_BLOCKS)]


BODY_TYPES: Final[dict[str, type[Any]]] = {
    "hello": Hello,
    "ping": Ping,
    "pong": Pong,
    "peers": Peers,
    "inv": Inv,
    "getdata": GetData,
    "data": Data,
    "getblocks": GetBlocks,
    "blocks": Blocks,
}
TYPE_NAMES: Final = {body: name for name, body in BODY_TYPES.items()}
Body = Hello | Ping | Pong | Peers | Inv | GetData | Data | GetBlocks | Blocks

_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_body_decoders = {name: msgspec.msgpack.Decoder(kind) for name, kind in BODY_TYPES.items()}


class DropMessage(Exception):
    """A frame we refuse; `reason` is the metric label and ban-score key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def seal(key: KeyPair, chain_id: str, body: Body, timestamp_ms: int) -> bytes:
    unsigned = Envelope(
        PROTOCOL_VERSION,
        TYPE_NAMES[type(body)],
        key.public_key,
        timestamp_ms,
        canonical_bytes(body),
    )
    signature = key.sign(unsigned.signing_digest(chain_id))
    return canonical_bytes(msgspec.structs.replace(unsigned, signature=signature))


def open_frame(frame: bytes, chain_id: str, max_bytes: int) -> tuple[Envelope, Body]:
    """Size, shape, signature, type and body, in that order; DropMessage names the failure."""
    if len(frame) > max_bytes:
        raise DropMessage("oversized", f"{len(frame)} bytes > {max_bytes}")
    try:
        envelope = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise DropMessage("malformed", str(error)) from None
    if envelope.version != PROTOCOL_VERSION:
        raise DropMessage("bad_version", str(envelope.version))
    if not verify_signature(envelope.sender, envelope.signature, envelope.signing_digest(chain_id)):
        raise DropMessage("bad_signature")
    decoder = _body_decoders.get(envelope.type)
    if decoder is None:
        raise DropMessage("unknown_type", envelope.type)
    try:
        body: Body = decoder.decode(envelope.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise DropMessage("malformed", str(error)) from None
    return envelope, body
